"""The seams managers call out through: publishing, and calls to raylets and workers.

Managers depend on these protocols only; the server provides the implementations
(pubsub: gcs_ha.managers.pubsub_manager; outbound gRPC: gcs_ha.server.clients.raylets). Tests
may give real implementations wired to real processes, never stand-ins for the manager
under test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import (
    ActorDeathCause,
    Address,
    Bundle,
    CoreWorkerStats,
    LeaseSpec,
)
from gcs_ha.proto.ray.core_worker_pb2 import PushTaskReply, PushTaskRequest
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply


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

    async def prepare_bundle_resources(self, node: GcsNodeInfo, bundles: Sequence[Bundle]) -> bool:
        """PrepareBundleResources: True when the raylet reserved every bundle."""
        ...

    async def commit_bundle_resources(
        self, node: GcsNodeInfo, bundles: Sequence[Bundle]
    ) -> None: ...

    async def remove_placement_group_bundles(
        self, node: GcsNodeInfo, placement_group_id: bytes, bundles: Sequence[Bundle]
    ) -> None: ...

    async def wait_bundles_released(self, node_id: bytes, timeout_s: float) -> bool:
        """Wait until a ReleaseUnusedBundles call to the node ended in this term; False
        after `timeout_s` without one."""
        ...

    # -- actor scheduling (calls without a deadline wait as long as the raylet takes) --

    async def request_worker_lease(
        self, node: GcsNodeInfo, lease_spec: LeaseSpec, grant_or_reject: bool
    ) -> RequestWorkerLeaseReply:
        """RequestWorkerLease (backlog 0), no deadline: the raylet answers once it granted
        a worker, spilled back, rejected or cancelled the lease."""
        ...

    async def cancel_worker_lease(self, node: GcsNodeInfo, lease_id: bytes) -> None:
        """CancelWorkerLease: drop a lease request the raylet still queues (a granted or
        unknown lease is left alone)."""
        ...

    async def kill_local_actor(
        self,
        node: GcsNodeInfo,
        actor_id: bytes,
        worker_id: bytes,
        force_kill: bool,
        death_cause: ActorDeathCause | None,
    ) -> None:
        """KillLocalActor: the raylet kills the actor's worker (gracefully unless forced)."""
        ...

    async def is_local_worker_dead(self, node: GcsNodeInfo, worker_id: bytes) -> bool:
        """IsLocalWorkerDead: whether the raylet knows the worker has exited."""
        ...

    async def wait_actor_workers_released(self, node_id: bytes, timeout_s: float) -> None:
        """Return once ReleaseUnusedActorWorkers to the node finished in this term (or
        after `timeout_s`): leases sent before it could lose their worker to it."""
        ...

    def forget(self, node_id: bytes) -> None:
        """Drop the channel to a node (it died or was removed)."""
        ...


class CoreWorkerClientPool(Protocol):
    """Outbound calls to core workers' CoreWorkerService (leased actor workers, owners).

    Calls have no deadline (a constructor or an owner's reference may take as long as it
    takes) and raise gcs_ha.errors.UnavailableError when the worker cannot be reached or
    answers with a gRPC error."""

    async def push_task(self, worker: Address, request: PushTaskRequest) -> PushTaskReply:
        """PushTask to the worker at `worker` (its ip, port and worker id)."""
        ...

    async def get_core_worker_stats(self, worker: Address) -> CoreWorkerStats:
        """GetCoreWorkerStats of the worker (which actor it hosts, tasks running)."""
        ...

    async def wait_for_actor_ref_deleted(self, owner: Address, actor_id: bytes) -> None:
        """WaitForActorRefDeleted on the owner: returns when the owner holds no more
        references to the actor."""
        ...

    def disconnect(self, worker_id: bytes) -> None:
        """Drop the channel to a worker (it died); its calls in flight fail."""
        ...
