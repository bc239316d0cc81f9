"""The GCS as the simulated nodes call it: stubs over one channel (see fleet.py).

Errors: `cluster_id` raises grpc.aio.AioRpcError when the GCS never answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import grpc.aio

from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 512 * 1024 * 1024)]


def gcs_target(address: str) -> str:
    """A gRPC target for one address or a comma-separated list of replicas."""
    parts = [a.strip() for a in address.split(",") if a.strip()]
    return parts[0] if len(parts) == 1 else "ipv4:" + ",".join(parts)


def node_ip(prefix: str, index: int) -> str:
    """The loopback address of node `index`: PREFIX.<hi>.<lo> (prefix like "127.1")."""
    return f"{prefix}.{index // 250}.{index % 250 + 1}"


class GcsStubs:
    """The GCS services over one channel, and the keyword arguments of every call."""

    def __init__(self, address: str, cluster_id: bytes = b"") -> None:
        self.channel = grpc.aio.insecure_channel(gcs_target(address), options=CHANNEL_OPTIONS)
        self.kw: dict[str, Any] = (
            {"metadata": (("ray_cluster_id", cluster_id.hex()),)} if cluster_id else {}
        )
        self.node = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.kv = gcs_service_pb2_grpc.InternalKVGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.job = gcs_service_pb2_grpc.JobInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.worker = gcs_service_pb2_grpc.WorkerInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.task = gcs_service_pb2_grpc.TaskInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.actor = gcs_service_pb2_grpc.ActorInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.pg = gcs_service_pb2_grpc.PlacementGroupInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.resources = gcs_service_pb2_grpc.NodeResourceInfoGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.pubsub = gcs_service_pb2_grpc.ControlPlanePubSubGcsServiceStub(self.channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self.channel.close(None)


async def cluster_id(address: str, timeout_s: float = 60.0) -> bytes:
    """GetClusterId, retried until the GCS answers (as `ray start` does)."""
    stubs = GcsStubs(address)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                reply = await stubs.node.GetClusterId(pb.GetClusterIdRequest(), timeout=5.0)
                return bytes(reply.cluster_id)
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await stubs.close()
