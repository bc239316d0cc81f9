"""The cluster id: one random 28-byte id per cluster, the same on every replica and across
failovers, and the GCS-owned KV keys written at promotion (ray-gcs-contract.md 1, 4, 12).

`ClusterId` remembers the id once seen (any replica then answers GetClusterId itself);
`ClusterIdInterceptor` checks the `ray_cluster_id` metadata of Ray's calls (wrong ->
UNAUTHENTICATED "WrongClusterID"). Where it is stored and when keys are written:
DESIGN.md, "The cluster id (cluster_id.py)".

Errors: CorruptDataError when the stored id is not 28 bytes; the store's errors.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from gcs_ha.errors import CorruptDataError, UnavailableError
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.forwarding import (
    Context,
    Handler,
    Interceptor,
    is_ray_gcs_method,
    method_kind,
    rejecting_handler,
)
from gcs_ha.server.ray_call import ray_call
from gcs_ha.storage.internal_kv import InternalKv

log = logging.getLogger(__name__)

CLUSTER_ID_BYTES = 28
CLUSTER_NAMESPACE = b"cluster"
CLUSTER_ID_KEY = b"ray_cluster_id"
METADATA_KEY = "ray_cluster_id"
GET_CLUSTER_ID = "/ray.rpc.NodeInfoGcsService/GetClusterId"
WRONG_CLUSTER_ID = "WrongClusterID: Perhaps the client is accessing GCS after it has restarted."
GCS_PID_KEY = b"gcs_pid"
AUTOSCALER_NAMESPACE = b"__autoscaler"
AUTOSCALER_V2_KEY = b"__autoscaler_v2_enabled"
FETCH_TIMEOUT_S = 2.0


class ClusterId:
    """This replica's knowledge of the cluster id (None until it has seen it)."""

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.hex: str | None = None

    def learn(self, value: bytes) -> None:
        """Remember the id. It never changes: a different one is refused."""
        if len(value) != CLUSTER_ID_BYTES:
            raise CorruptDataError(f"a cluster id has 28 bytes, not {len(value)}")
        if self.value is not None and self.value != value:
            raise CorruptDataError(
                f"cluster id {value.hex()} differs from the one known here, {self.hex}"
            )
        if self.value is None:
            log.info("cluster id %s", value.hex())
        self.value, self.hex = bytes(value), value.hex()

    def answers_locally(self, method: str) -> bool:
        """Whether this replica answers `method` itself: GetClusterId once the id is known."""
        return method == GET_CLUSTER_ID and self.value is not None


async def load_or_create(kv: InternalKv) -> bytes:
    """The stored cluster id; made and stored first when there is none (first leader)."""
    value = await kv.get(CLUSTER_NAMESPACE, CLUSTER_ID_KEY)
    if value is None:
        await kv.put(
            CLUSTER_NAMESPACE, CLUSTER_ID_KEY, secrets.token_bytes(CLUSTER_ID_BYTES), False
        )
        value = await kv.get(CLUSTER_NAMESPACE, CLUSTER_ID_KEY)
        if value is None:  # pragma: no cover - the put above was acknowledged
            raise CorruptDataError("the cluster id just stored is missing")
        log.info("made a new cluster id")
    if len(value) != CLUSTER_ID_BYTES:
        raise CorruptDataError(f"stored cluster id has {len(value)} bytes, not 28")
    return value


async def write_keys_before_serving(kv: InternalKv) -> None:
    """The GCS-owned keys Ray's processes read from their first call: written when absent."""
    if not await kv.exists(AUTOSCALER_NAMESPACE, AUTOSCALER_V2_KEY):
        await kv.put(AUTOSCALER_NAMESPACE, AUTOSCALER_V2_KEY, b"0", False)


async def write_gcs_pid(kv: InternalKv, pid: int | None = None) -> None:
    """Set ""/gcs_pid to the serving process's pid (the dashboard agent reads it)."""
    await kv.put(b"", GCS_PID_KEY, str(os.getpid() if pid is None else pid).encode(), True)


async def fetch_from_leader(
    channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]]
) -> bytes:
    """Ask the leader for the cluster id (a follower learning it). Raises UnavailableError."""
    call = channel.unary_unary(GET_CLUSTER_ID, None, None)
    try:
        raw = await call(
            pb.GetClusterIdRequest().SerializeToString(),
            metadata=tuple(metadata),
            timeout=FETCH_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as exc:
        raise UnavailableError(f"GetClusterId on the leader: {exc.code().name}") from exc
    reply = pb.GetClusterIdReply.FromString(raw)
    if reply.status.code != 0 or len(reply.cluster_id) != CLUSTER_ID_BYTES:
        raise UnavailableError(f"GetClusterId on the leader: status {reply.status.code}")
    return reply.cluster_id


class ClusterIdServicer(pb_grpc.NodeInfoGcsServiceServicer):
    """NodeInfoGcsService.GetClusterId, answered by any replica that knows the id.

    The node info service, when it exists, subclasses this (or calls `get_cluster_id`)."""

    def __init__(self, cluster_id: ClusterId) -> None:
        self.cluster_id = cluster_id

    async def GetClusterId(
        self, request: pb.GetClusterIdRequest, context: Context
    ) -> pb.GetClusterIdReply:
        async def handle(reply: pb.GetClusterIdReply) -> None:
            if self.cluster_id.value is None:
                raise UnavailableError("the cluster id is not known yet")
            reply.cluster_id = self.cluster_id.value

        return await ray_call(context, pb.GetClusterIdReply(), handle)


class ClusterIdInterceptor(Interceptor):
    """Rejects calls of Ray's GCS services that carry another cluster's id."""

    def __init__(self, cluster_id: ClusterId) -> None:
        self._cluster_id = cluster_id

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        known = self._cluster_id.hex
        if known is not None and details.method != GET_CLUSTER_ID:
            sent = _metadata_value(details.invocation_metadata, METADATA_KEY)
            if sent is not None and sent.lower() != known and is_ray_gcs_method(details.method):
                kind = method_kind(details.method)
                if kind is not None:  # an unknown method stays UNIMPLEMENTED
                    return rejecting_handler(
                        kind, grpc.StatusCode.UNAUTHENTICATED, WRONG_CLUSTER_ID
                    )
        return await continuation(details)


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
    return None
