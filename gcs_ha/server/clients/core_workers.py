"""Outbound calls from the GCS to core workers: Ray's CoreWorkerClientPool (the managers'
port `gcs_ha.managers.ports.CoreWorkerClientPool`: PushTask, WaitForActorRefDeleted,
GetCoreWorkerStats) over the channel pool (channels.py), one channel per worker, dropped
when the worker or its node dies; no deadline but on GetCoreWorkerStats (a constructor
may run for minutes, an owner keeps a reference as long as it likes); keepalive pings
notice a vanished peer. A Manager ("core_worker_client_pool"). Also the job manager's
driver probe (NumPendingTasks, a channel per call).

Errors: UnavailableError for any gRPC error; callers decide whether to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc.aio

from gcs_ha.managers.manager import GcsInitData
from gcs_ha.proto.ray import core_worker_pb2 as cw
from gcs_ha.proto.ray import core_worker_pb2_grpc as cw_grpc
from gcs_ha.proto.ray.common_pb2 import Address, CoreWorkerStats
from gcs_ha.ray_auth import RayAuth
from gcs_ha.ray_tls import RayTls, aio_channel
from gcs_ha.server.clients.channels import MAX_MESSAGE_BYTES, ChannelPool, Conn, unavailable

log = logging.getLogger(__name__)

STATS_TIMEOUT_S = 5.0
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _stub(channel: grpc.aio.Channel) -> Any:
    return cw_grpc.CoreWorkerServiceStub(channel)  # type: ignore[no-untyped-call]


class GrpcCoreWorkerClientPool:
    """Cached grpc.aio channels to core workers, keyed by worker id."""

    def __init__(
        self,
        cluster_id_hex: Callable[[], str | None] | None = None,
        auth: RayAuth | None = None,
        tls: RayTls | None = None,
    ) -> None:
        """`auth`: Ray's token, sent on every call in token mode (gcs_ha.ray_auth);
        `tls`: Ray's TLS settings, the channels are TLS when given (gcs_ha.ray_tls)."""
        self._pool: ChannelPool[Any] = ChannelPool(
            CHANNEL_OPTIONS, _stub, cluster_id_hex, auth, tls
        )

    # -- Manager lifecycle -------------------------------------------------------------

    @property
    def name(self) -> str:
        return "core_worker_client_pool"

    async def start(self, init: GcsInitData) -> None:
        """Nothing to rebuild: channels are made on first use."""

    async def stop(self) -> None:
        """Close every channel (calls in flight fail) and wait for the closes."""
        await self._pool.close()

    # -- the CoreWorkerClientPool port ------------------------------------------------

    async def push_task(self, worker: Address, request: cw.PushTaskRequest) -> cw.PushTaskReply:
        """CoreWorkerService.PushTask on the worker."""
        reply: cw.PushTaskReply = await self._call(worker, "PushTask", request)
        return reply

    async def get_core_worker_stats(self, worker: Address) -> CoreWorkerStats:
        """CoreWorkerService.GetCoreWorkerStats (no memory or task details)."""
        request = cw.GetCoreWorkerStatsRequest(intended_worker_id=worker.worker_id)
        reply: cw.GetCoreWorkerStatsReply = await self._call(
            worker, "GetCoreWorkerStats", request, timeout_s=STATS_TIMEOUT_S
        )
        return reply.core_worker_stats

    async def wait_for_actor_ref_deleted(self, owner: Address, actor_id: bytes) -> None:
        """CoreWorkerService.WaitForActorRefDeleted on the owner (a long poll)."""
        request = cw.WaitForActorRefDeletedRequest(
            intended_worker_id=owner.worker_id, actor_id=actor_id
        )
        await self._call(owner, "WaitForActorRefDeleted", request)

    def disconnect(self, worker_id: bytes) -> None:
        """Drop the worker's channel (closed in the background; its calls fail)."""
        self._pool.drop(worker_id)

    def disconnect_node(self, node_id: bytes) -> None:
        """Drop the channels of every worker of a dead node."""
        self._pool.drop_node(node_id)

    def is_connected(self, worker_id: bytes) -> bool:
        """Whether the pool holds a channel to the worker (for tests and logs)."""
        return self._pool.get(worker_id) is not None

    # -- internals ---------------------------------------------------------------------

    def _conn(self, address: Address) -> Conn[Any]:
        target = f"{address.ip_address}:{address.port}"
        return self._pool.conn(address.worker_id, target, bytes(address.node_id))

    async def _call(
        self, address: Address, method: str, request: Any, timeout_s: float | None = None
    ) -> Any:
        conn = self._conn(address)
        what = f"{method} to worker {bytes(address.worker_id).hex()[:12]}"
        rpc = getattr(conn.stubs, method)
        return await self._pool.call(conn, rpc, request, timeout_s=timeout_s, what=what)


class CoreWorkerDriverProbe:
    """The job manager's DriverProbe: CoreWorkerService.NumPendingTasks on the driver's
    core worker, over a channel opened for the call (the dashboard's job list is the
    only caller, and rare; nothing to keep between calls)."""

    def __init__(self, auth: RayAuth | None = None, tls: RayTls | None = None) -> None:
        self._auth = auth or RayAuth()
        self._tls = tls

    async def num_pending_tasks(self, driver: Address, timeout_s: float) -> int:
        target = f"{driver.ip_address}:{driver.port}"
        try:
            async with aio_channel(target, self._tls) as channel:
                reply = await _stub(channel).NumPendingTasks(
                    cw.NumPendingTasksRequest(), timeout=timeout_s, metadata=self._auth.metadata()
                )
        except grpc.aio.AioRpcError as exc:
            raise unavailable("NumPendingTasks to driver", target, exc) from exc
        return int(reply.num_pending_tasks)
