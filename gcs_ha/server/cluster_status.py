"""The cluster as one replica's status page shows it: every member's own status.

This replica's own status plus every other member's admin Status, asked at once over
gRPC (each bounded by ASK_TIMEOUT_S), combined as `gcs-ha status` combines them
(gcs_ha.cluster_view.combine_answers). A view is cached CACHE_S, one round in flight
(DESIGN.md, "The status page"). Errors: none of its own; a member that fails is shown
unreachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from gcs_ha.cluster_view import ClusterView, combine_answers
from gcs_ha.consensus.api import ReplicaStatusInfo
from gcs_ha.proto import admin_pb2, admin_pb2_grpc
from gcs_ha.ray_tls import RayTls, aio_channel
from gcs_ha.server.services.admin_service import member_to_proto, status_to_proto

ASK_TIMEOUT_S = 0.5
CACHE_S = 1.0


class ClusterStatus:
    """See the module docstring. `own_status` is this replica's (Replica.status);
    `tls`: Ray's TLS settings, when the members' gRPC ports use it."""

    def __init__(
        self,
        own_status: Callable[[], ReplicaStatusInfo],
        tls: RayTls | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._own_status = own_status
        self._tls = tls
        self._clock = clock
        self._cached: tuple[float, ClusterView] | None = None
        self._pending: asyncio.Task[ClusterView] | None = None
        self.gathered = 0  # rounds of Status calls made (tests, measurements)

    async def view(self) -> ClusterView:
        """The cluster view, at most CACHE_S old."""
        cached = self._cached
        if cached is not None and self._clock() - cached[0] < CACHE_S:
            return cached[1]
        if self._pending is None:
            self._pending = asyncio.create_task(self._refresh())
        # shield: a request that goes away does not cancel the round others wait for.
        return await asyncio.shield(self._pending)

    async def _refresh(self) -> ClusterView:
        try:
            view = await self._gather()
            self._cached = (self._clock(), view)
            return view
        finally:
            self._pending = None

    async def _gather(self) -> ClusterView:
        self.gathered += 1
        own = self._own_status()
        members = [member_to_proto(m) for m in own.members] or [
            admin_pb2.Member(
                node_id=own.node_id, raft_address=own.raft_address, gcs_address=own.gcs_address
            )
        ]
        members.sort(key=lambda m: (not m.node_id, m.node_id, m.raft_address))
        mine = status_to_proto(own)
        answers = await asyncio.gather(*(self._answer(m, own.raft_address, mine) for m in members))
        return combine_answers(members, list(answers))

    async def _answer(
        self, member: admin_pb2.Member, own_raft: str, mine: admin_pb2.ReplicaStatus
    ) -> admin_pb2.ReplicaStatus | None:
        if member.raft_address == own_raft:
            return mine
        if not member.gcs_address:
            return None
        return await ask_status(member.gcs_address, self._tls, ASK_TIMEOUT_S)


async def ask_status(
    address: str, tls: RayTls | None, timeout: float
) -> admin_pb2.ReplicaStatus | None:
    """The admin Status of the replica at `address`, or None when it does not answer."""
    try:
        async with aio_channel(address, tls) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
            reply: admin_pb2.ReplicaStatus = await stub.Status(
                admin_pb2.StatusRequest(), timeout=timeout
            )
            return reply
    except grpc.RpcError:
        return None
