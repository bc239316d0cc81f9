"""Outbound calls from the GCS to raylets: Ray's RayletClientPool over grpc.aio channels.

The managers call raylets only through `gcs_ha.managers.ports.RayletClientPool`; this is
its implementation. One channel per node, made on first use from the node's
`node_manager_address:node_manager_port` and kept until `forget(node_id)` (the node died)
or `stop()` (this replica stops leading). A node whose address changed gets a new channel.

Every call has a deadline. A raylet that cannot be reached, answers with a gRPC error or
runs out of time raises `UnavailableError` naming the node and the method; callers decide
whether to retry. The health check (grpc.health.v1 `Check` with service = the node id in
hex, ray-gcs-contract.md section 9) returns False for an answer other than SERVING; a
raylet restarted on the same port under a new id answers NOT_FOUND, which is a gRPC error
and so raises UnavailableError too: both count as a failed check.

Calls to Ray's NodeManagerService carry the `ray_cluster_id` metadata when the cluster id
is known (as Ray's GCS clients do; a raylet accepts a call without it).

The pool is also a Manager (name "raylet_client_pool"): added first, it stops last and
closes every channel, which fails calls still in flight.

Errors: UnavailableError (above); InvalidRequestError for a bundle that is not a
`common_pb2.Bundle`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.errors import InvalidRequestError, UnavailableError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.proto.ray.common_pb2 import Bundle
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # Ray's max_grpc_message_size
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A raylet that restarts is reached again within a couple of seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
CLUSTER_ID_METADATA = "ray_cluster_id"

Reply = TypeVar("Reply", bound=Message)


class _Conn:
    """One raylet's channel and stubs."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.node_manager = nm_grpc.NodeManagerServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(self.channel)


class GrpcRayletClientPool:
    """Cached grpc.aio channels to raylets, with one method per outbound call."""

    def __init__(
        self,
        cluster_id_hex: Callable[[], str | None] | None = None,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self._cluster_id_hex = cluster_id_hex
        self._timeout_s = call_timeout_s
        self._conns: dict[bytes, _Conn] = {}
        self._closing: set[asyncio.Task[None]] = set()

    # -- Manager lifecycle -------------------------------------------------------------

    @property
    def name(self) -> str:
        return "raylet_client_pool"

    async def start(self, init: GcsInitData) -> None:
        """Nothing to rebuild: channels are made on first use."""

    async def stop(self) -> None:
        """Close every channel (calls in flight fail) and wait for the closes."""
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(conn.channel.close(None) for conn in conns))
        if self._closing:
            await asyncio.wait(list(self._closing))

    # -- the RayletClientPool port -----------------------------------------------------

    async def health_check(self, node: GcsNodeInfo, timeout_s: float) -> bool:
        """grpc.health.v1 Check(service=<node id hex>): True when the raylet is SERVING."""
        conn = self._conn(node)
        request = health_pb2.HealthCheckRequest(service=node.node_id.hex())
        try:
            reply = await conn.health.Check(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(node, "health check", exc) from exc
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def notify_gcs_restart(self, node: GcsNodeInfo) -> None:
        await self._call(node, "NotifyGCSRestart", nm.NotifyGCSRestartRequest())

    async def release_unused_actor_workers(
        self, node: GcsNodeInfo, worker_ids_in_use: Iterable[bytes]
    ) -> None:
        request = nm.ReleaseUnusedActorWorkersRequest(worker_ids_in_use=list(worker_ids_in_use))
        await self._call(node, "ReleaseUnusedActorWorkers", request)

    async def release_unused_bundles(
        self, node: GcsNodeInfo, bundles_in_use: Iterable[object]
    ) -> None:
        request = nm.ReleaseUnusedBundlesRequest()
        for bundle in bundles_in_use:
            if not isinstance(bundle, Bundle):
                raise InvalidRequestError(f"not a Bundle: {type(bundle).__name__}")
            request.bundles_in_use.append(bundle)
        await self._call(node, "ReleaseUnusedBundles", request)

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

    def forget(self, node_id: bytes) -> None:
        """Drop the node's channel (closed in the background)."""
        conn = self._conns.pop(bytes(node_id), None)
        if conn is not None:
            self._close_later(conn)

    # -- internals ---------------------------------------------------------------------

    def address_of(self, node_id: bytes) -> str | None:
        """The address of the node's cached channel, if any (for tests and logs)."""
        conn = self._conns.get(bytes(node_id))
        return None if conn is None else conn.address

    def _conn(self, node: GcsNodeInfo) -> _Conn:
        address = f"{node.node_manager_address}:{node.node_manager_port}"
        node_id = bytes(node.node_id)
        conn = self._conns.get(node_id)
        if conn is not None and conn.address == address:
            return conn
        if conn is not None:
            self._close_later(conn)
        conn = self._conns[node_id] = _Conn(address)
        return conn

    async def _call(self, node: GcsNodeInfo, method: str, request: Message) -> Any:
        """Call NodeManagerService.`method` on the node's raylet with the pool's deadline."""
        rpc = getattr(self._conn(node).node_manager, method)
        try:
            return await rpc(request, timeout=self._timeout_s, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(node, method, exc) from exc

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        cluster_hex = self._cluster_id_hex() if self._cluster_id_hex is not None else None
        return ((CLUSTER_ID_METADATA, cluster_hex),) if cluster_hex else ()

    def _close_later(self, conn: _Conn) -> None:
        task = asyncio.get_running_loop().create_task(conn.channel.close(None))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def _unavailable(node: GcsNodeInfo, what: str, exc: grpc.aio.AioRpcError) -> UnavailableError:
    where = f"{node.node_manager_address}:{node.node_manager_port}"
    return UnavailableError(
        f"{what} to raylet {node.node_id.hex()[:12]} at {where}: "
        f"{exc.code().name} {exc.details() or ''}".rstrip()
    )
