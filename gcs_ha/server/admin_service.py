"""The admin gRPC service: a thin shell over a `Replica`.

Every method calls one `Replica` method and converts between protobuf and the
consensus dataclasses. Errors are `gcs_ha.errors` exceptions, turned into gRPC
statuses by `gcs_ha.server.status` (a follower answers leader-only calls with
FAILED_PRECONDITION and the leader's GCS address). Raises nothing itself: a bad
request (empty node id, bad address) is InvalidRequestError -> INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc.aio

from gcs_ha.addresses import check_address
from gcs_ha.consensus.api import MemberInfo, Replica, ReplicaStatusInfo
from gcs_ha.errors import ConfigError, GcsHaError, InvalidRequestError
from gcs_ha.proto import admin_pb2, admin_pb2_grpc
from gcs_ha.server.status import abort_with_error

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


def status_to_proto(info: ReplicaStatusInfo) -> admin_pb2.ReplicaStatus:
    """The wire form of one replica's status."""
    return admin_pb2.ReplicaStatus(
        node_id=info.node_id,
        role=info.role,
        term=info.term,
        commit_index=info.commit_index,
        applied_index=info.applied_index,
        leader_node_id=info.leader_node_id or "",
        leader_raft_address=info.leader_raft_address or "",
        raft_address=info.raft_address,
        gcs_address=info.gcs_address,
        serving=info.serving,
        log_length=info.log_length,
        last_log_index=info.last_log_index,
        has_quorum=info.has_quorum,
        cluster_name=info.cluster_name,
        members=[member_to_proto(m) for m in info.members],
        match_index=info.match_index,
    )


def member_to_proto(member: MemberInfo) -> admin_pb2.Member:
    """The wire form of a member."""
    return admin_pb2.Member(
        node_id=member.node_id, raft_address=member.raft_address, gcs_address=member.gcs_address
    )


def member_from_proto(member: admin_pb2.Member) -> MemberInfo:
    """A member from the wire; InvalidRequestError when a field is missing or malformed."""
    if not member.node_id:
        raise InvalidRequestError("member.node_id is empty")
    try:
        check_address(member.raft_address)
        if member.gcs_address:
            check_address(member.gcs_address)
    except ConfigError as exc:
        raise InvalidRequestError(f"member {member.node_id}: {exc}") from exc
    return MemberInfo(member.node_id, member.raft_address, member.gcs_address)


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Status, membership, leadership transfer, compaction, digest and shutdown of a replica.

    `request_shutdown` is called by Shutdown after the reply is queued; the replica
    process then stops the gRPC server (letting the reply go out) and the replica.
    """

    def __init__(self, replica: Replica, request_shutdown: Callable[[], None]) -> None:
        self._replica = replica
        self._request_shutdown = request_shutdown

    async def Status(
        self, request: admin_pb2.StatusRequest, context: Context
    ) -> admin_pb2.ReplicaStatus:
        return status_to_proto(await _guarded(context, _now(self._replica.status)))

    async def AddMember(
        self, request: admin_pb2.AddMemberRequest, context: Context
    ) -> admin_pb2.AddMemberReply:
        async def add() -> None:
            await self._replica.add_member(member_from_proto(request.member))

        await _guarded(context, add())
        return admin_pb2.AddMemberReply()

    async def RemoveMember(
        self, request: admin_pb2.RemoveMemberRequest, context: Context
    ) -> admin_pb2.RemoveMemberReply:
        async def remove() -> None:
            if not request.node_id:
                raise InvalidRequestError("node_id is empty")
            await self._replica.remove_member(request.node_id)

        await _guarded(context, remove())
        return admin_pb2.RemoveMemberReply()

    async def TransferLeadership(
        self, request: admin_pb2.TransferLeadershipRequest, context: Context
    ) -> admin_pb2.TransferLeadershipReply:
        await _guarded(context, self._replica.transfer_leadership(request.node_id or None))
        return admin_pb2.TransferLeadershipReply()

    async def Compact(
        self, request: admin_pb2.CompactRequest, context: Context
    ) -> admin_pb2.CompactReply:
        index = await _guarded(context, self._replica.compact())
        return admin_pb2.CompactReply(snapshot_index=index)

    async def Digest(
        self, request: admin_pb2.DigestRequest, context: Context
    ) -> admin_pb2.DigestReply:
        applied, digest = await _guarded(context, _now(self._replica.digest))
        return admin_pb2.DigestReply(applied_index=applied, digest=digest)

    async def Shutdown(
        self, request: admin_pb2.ShutdownRequest, context: Context
    ) -> admin_pb2.ShutdownReply:
        self._request_shutdown()
        return admin_pb2.ShutdownReply()


async def _now(fn: Callable[[], T]) -> T:
    """Run a synchronous replica call inside `_guarded`'s error mapping."""
    return fn()


async def _guarded(context: Context, call: Awaitable[T]) -> T:
    """Await `call`, ending the RPC with the mapped status if it raises a GcsHaError."""
    try:
        return await call
    except GcsHaError as exc:
        await abort_with_error(context, exc)
