"""The seams managers call out through: publishing, and calls to raylets and workers.

Managers depend on these protocols only; the server provides the implementations
(pubsub: gcs_ha.managers.pubsub_manager; outbound gRPC: gcs_ha.server.outbound). Tests
may give real implementations wired to real processes, never stand-ins for the manager
under test.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo


class Publisher(Protocol):
    """Publishes GCS events to subscribers (Ray's GcsPublisher)."""

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        """Queue `message` for every subscriber of its channel (and of its key_id).
        channel_type, key_id and the inner message are set by the caller; the publisher
        assigns sequence_id. Never blocks, never raises for a slow subscriber."""
        ...


class NodeAddress(Protocol):
    """Where a raylet listens (GcsNodeInfo carries it)."""

    node_manager_address: str
    node_manager_port: int


class RayletClientPool(Protocol):
    """Outbound calls to raylets' NodeManagerService and grpc health.

    Every call has a deadline and raises gcs_ha.errors.UnavailableError when the raylet
    cannot be reached or answers with a gRPC error; results are the reply messages."""

    async def health_check(self, node: GcsNodeInfo, timeout_s: float) -> bool:
        """grpc.health.v1 Check(service=<node id hex>) on the raylet: True when SERVING."""
        ...

    async def notify_gcs_restart(self, node: GcsNodeInfo) -> None: ...

    async def release_unused_actor_workers(
        self, node: GcsNodeInfo, worker_ids_in_use: Iterable[bytes]
    ) -> None: ...

    async def release_unused_bundles(
        self, node: GcsNodeInfo, bundles_in_use: Iterable[object]
    ) -> None: ...

    async def get_resource_load(self, node: GcsNodeInfo) -> object:
        """NodeManagerService.GetResourceLoad reply (resource demand of the node)."""
        ...

    def forget(self, node_id: bytes) -> None:
        """Drop the channel to a node (it died or was removed)."""
        ...
