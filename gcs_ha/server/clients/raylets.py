"""Outbound calls from the GCS to raylets: Ray's RayletClientPool (the managers' port
`gcs_ha.managers.ports.RayletClientPool`), one method per NodeManagerService call and the
health check, over the channel pool (channels.py), one channel per node. Every call has
a deadline except RequestWorkerLease (a retried lease still queued would lease twice).
ReleaseUnusedActorWorkers and ReleaseUnusedBundles record, per term, that the node got
them (`wait_actor_workers_released`, `wait_bundles_released`). A Manager ("raylet_client_pool"):
added first, it stops last and closes every channel.

Errors: UnavailableError (unreachable, a gRPC error, out of time; a health check answered
NOT_FOUND by a raylet restarted under a new id too); InvalidRequestError for a bundle
that is not a `common_pb2.Bundle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.errors import InvalidRequestError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.proto.ray.common_pb2 import ActorDeathCause, Bundle, LeaseSpec
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.ray_auth import RayAuth
from gcs_ha.ray_tls import RayTls
from gcs_ha.server.clients.channels import MAX_MESSAGE_BYTES, ChannelPool, Conn, unavailable

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A raylet that restarts is reached again within a couple of seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A new raylet on a dead one's address must not share its subchannel in backoff.
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class _Stubs:
    """One raylet's stubs."""

    node_manager: Any
    health: health_pb2_grpc.HealthStub


def _stubs(channel: grpc.aio.Channel) -> _Stubs:
    return _Stubs(
        node_manager=nm_grpc.NodeManagerServiceStub(channel),  # type: ignore[no-untyped-call]
        health=health_pb2_grpc.HealthStub(channel),
    )


class GrpcRayletClientPool:
    """Cached grpc.aio channels to raylets, with one method per outbound call."""

    def __init__(
        self,
        cluster_id_hex: Callable[[], str | None] | None = None,
        call_timeout_s: float = CALL_TIMEOUT_S,
        auth: RayAuth | None = None,
        tls: RayTls | None = None,
    ) -> None:
        """`auth`: Ray's token, sent on every call in token mode (gcs_ha.ray_auth);
        `tls`: Ray's TLS settings, the channels are TLS when given (gcs_ha.ray_tls)."""
        self._pool = ChannelPool(CHANNEL_OPTIONS, _stubs, cluster_id_hex, auth, tls)
        self._timeout_s = call_timeout_s
        self._released: dict[bytes, asyncio.Event] = {}  # this term's actor worker releases
        self._bundles_released: dict[bytes, asyncio.Event] = {}  # this term's bundle releases

    # -- Manager lifecycle -------------------------------------------------------------

    @property
    def name(self) -> str:
        return "raylet_client_pool"

    async def start(self, init: GcsInitData) -> None:
        """Channels are made on first use; no actor worker release happened yet."""
        self._released = {}
        self._bundles_released = {}

    async def stop(self) -> None:
        """Close every channel (calls in flight fail) and wait for the closes."""
        await self._pool.close()

    # -- the RayletClientPool port -----------------------------------------------------

    async def health_check(self, node: GcsNodeInfo, timeout_s: float) -> bool:
        """grpc.health.v1 Check(service=<node id hex>): True when the raylet is SERVING."""
        conn = self._conn(node)
        request = health_pb2.HealthCheckRequest(service=node.node_id.hex())
        try:
            reply = await conn.stubs.health.Check(
                request, timeout=timeout_s, metadata=self._pool.auth.metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise unavailable(f"health check to {_peer(node)}", conn.address, exc) from exc
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def notify_gcs_restart(self, node: GcsNodeInfo) -> None:
        await self._call(node, "NotifyGCSRestart", nm.NotifyGCSRestartRequest())

    async def release_unused_actor_workers(
        self, node: GcsNodeInfo, worker_ids_in_use: Iterable[bytes]
    ) -> None:
        request = nm.ReleaseUnusedActorWorkersRequest(worker_ids_in_use=list(worker_ids_in_use))
        try:
            await self._call(node, "ReleaseUnusedActorWorkers", request)
        finally:  # actor leases to the node may go now (wait_actor_workers_released)
            self._released.setdefault(bytes(node.node_id), asyncio.Event()).set()

    async def release_unused_bundles(
        self, node: GcsNodeInfo, bundles_in_use: Iterable[object]
    ) -> None:
        request = nm.ReleaseUnusedBundlesRequest()
        for bundle in bundles_in_use:
            if not isinstance(bundle, Bundle):
                raise InvalidRequestError(f"not a Bundle: {type(bundle).__name__}")
            request.bundles_in_use.append(bundle)
        try:
            await self._call(node, "ReleaseUnusedBundles", request)
        finally:  # bundles may be prepared on the node now (wait_bundles_released)
            self._bundles_released.setdefault(bytes(node.node_id), asyncio.Event()).set()

    async def get_resource_load(self, node: GcsNodeInfo) -> nm.GetResourceLoadReply:
        reply: nm.GetResourceLoadReply = await self._call(
            node, "GetResourceLoad", nm.GetResourceLoadRequest()
        )
        return reply

    async def shutdown_raylet(self, node: GcsNodeInfo, graceful: bool) -> None:
        """NodeManagerService.ShutdownRaylet (behind NodeInfoGcsService.DrainNode)."""
        await self._call(node, "ShutdownRaylet", nm.ShutdownRayletRequest(graceful=graceful))

    async def drain_raylet(
        self, node: GcsNodeInfo, reason: int, reason_message: str, deadline_timestamp_ms: int
    ) -> nm.DrainRayletReply:
        """NodeManagerService.DrainRaylet (behind the autoscaler's DrainNode)."""
        request = nm.DrainRayletRequest(
            reason=reason,  # type: ignore[arg-type]
            reason_message=reason_message,
            deadline_timestamp_ms=deadline_timestamp_ms,
        )
        reply: nm.DrainRayletReply = await self._call(node, "DrainRaylet", request)
        return reply

    async def resize_local_resource_instances(
        self, node: GcsNodeInfo, resources: Mapping[str, float]
    ) -> nm.ResizeLocalResourceInstancesReply:
        """NodeManagerService.ResizeLocalResourceInstances (autoscaler resize)."""
        request = nm.ResizeLocalResourceInstancesRequest(resources=dict(resources))
        reply: nm.ResizeLocalResourceInstancesReply = await self._call(
            node, "ResizeLocalResourceInstances", request
        )
        return reply

    async def prepare_bundle_resources(self, node: GcsNodeInfo, bundles: Sequence[Bundle]) -> bool:
        """NodeManagerService.PrepareBundleResources: True when the raylet reserved them."""
        request = nm.PrepareBundleResourcesRequest(bundle_specs=list(bundles))
        reply: nm.PrepareBundleResourcesReply = await self._call(
            node, "PrepareBundleResources", request
        )
        return bool(reply.success)

    async def commit_bundle_resources(self, node: GcsNodeInfo, bundles: Sequence[Bundle]) -> None:
        """NodeManagerService.CommitBundleResources (the prepared bundles become usable)."""
        request = nm.CommitBundleResourcesRequest(bundle_specs=list(bundles))
        await self._call(node, "CommitBundleResources", request)

    async def remove_placement_group_bundles(
        self, node: GcsNodeInfo, placement_group_id: bytes, bundles: Sequence[Bundle]
    ) -> None:
        """NodeManagerService.RemovePlacementGroupBundles (cancel prepared or committed)."""
        request = nm.RemovePlacementGroupBundlesRequest(
            placement_group_id=placement_group_id, bundle_specs=list(bundles)
        )
        await self._call(node, "RemovePlacementGroupBundles", request)

    # -- actor scheduling ---------------------------------------------------------------

    async def request_worker_lease(
        self, node: GcsNodeInfo, lease_spec: LeaseSpec, grant_or_reject: bool
    ) -> nm.RequestWorkerLeaseReply:
        """NodeManagerService.RequestWorkerLease, without a deadline (the raylet answers
        when it granted, spilled back, rejected or cancelled; a worker may take long to
        start). A deadline would make the GCS retry a lease the raylet still queues."""
        request = nm.RequestWorkerLeaseRequest(
            lease_spec=lease_spec,
            grant_or_reject=grant_or_reject,
            backlog_size=0,
            is_selected_based_on_locality=False,
        )
        reply: nm.RequestWorkerLeaseReply = await self._call(
            node, "RequestWorkerLease", request, deadline=False
        )
        return reply

    async def cancel_worker_lease(self, node: GcsNodeInfo, lease_id: bytes) -> None:
        """NodeManagerService.CancelWorkerLease (a queued lease is dropped)."""
        await self._call(node, "CancelWorkerLease", nm.CancelWorkerLeaseRequest(lease_id=lease_id))

    async def kill_local_actor(
        self,
        node: GcsNodeInfo,
        actor_id: bytes,
        worker_id: bytes,
        force_kill: bool,
        death_cause: ActorDeathCause | None,
    ) -> None:
        """NodeManagerService.KillLocalActor (the raylet kills the actor's worker)."""
        request = nm.KillLocalActorRequest(
            intended_actor_id=actor_id, worker_id=worker_id, force_kill=force_kill
        )
        if death_cause is not None:
            request.death_cause.CopyFrom(death_cause)
        await self._call(node, "KillLocalActor", request)

    async def is_local_worker_dead(self, node: GcsNodeInfo, worker_id: bytes) -> bool:
        """NodeManagerService.IsLocalWorkerDead."""
        request = nm.IsLocalWorkerDeadRequest(worker_id=worker_id)
        reply: nm.IsLocalWorkerDeadReply = await self._call(node, "IsLocalWorkerDead", request)
        return bool(reply.is_dead)

    async def wait_actor_workers_released(self, node_id: bytes, timeout_s: float) -> None:
        """Return once a ReleaseUnusedActorWorkers call to the node ended (answered or
        failed) in this term, or after `timeout_s` (Ray's GCS holds actor leases to a node
        until that reply: a lease granted before it could lose its worker to it)."""
        released = self._released.setdefault(bytes(node_id), asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), timeout_s)

    async def wait_bundles_released(self, node_id: bytes, timeout_s: float) -> bool:
        """Wait until a ReleaseUnusedBundles call to the node ended (answered or failed)
        in this term; False after `timeout_s` without one (Ray's GCS prepares no bundle
        on a node before that reply: the release would free it)."""
        released = self._bundles_released.setdefault(bytes(node_id), asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), timeout_s)
        return released.is_set()

    def forget(self, node_id: bytes) -> None:
        """Drop the node's channel (closed in the background)."""
        self._pool.drop(node_id)

    # -- internals ---------------------------------------------------------------------

    def address_of(self, node_id: bytes) -> str | None:
        """The address of the node's cached channel, if any (for tests and logs)."""
        conn = self._pool.get(node_id)
        return None if conn is None else conn.address

    def _conn(self, node: GcsNodeInfo) -> Conn[_Stubs]:
        address = f"{node.node_manager_address}:{node.node_manager_port}"
        return self._pool.conn(node.node_id, address)

    async def _call(
        self, node: GcsNodeInfo, method: str, request: Message, *, deadline: bool = True
    ) -> Any:
        """Call NodeManagerService.`method` on the node's raylet with the pool's deadline
        (or none)."""
        conn = self._conn(node)
        rpc = getattr(conn.stubs.node_manager, method)
        timeout = self._timeout_s if deadline else None
        what = f"{method} to {_peer(node)}"
        return await self._pool.call(conn, rpc, request, timeout_s=timeout, what=what)


def _peer(node: GcsNodeInfo) -> str:
    return f"raylet {node.node_id.hex()[:12]}"
