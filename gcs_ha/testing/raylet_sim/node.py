"""One simulated raylet: its NodeManagerService, grpc.health and CoreWorkerService on its
own loopback address, its own resources, and its calls to the GCS in a real raylet's
order (ray-gcs-contract.md section 3; see ../DESIGN.md).

Errors: none raised to the caller; a failed GCS call is retried (the loops) or counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.proto.ray import core_worker_pb2 as cw
from gcs_ha.proto.ray import core_worker_pb2_grpc as cw_grpc
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import INTENDED_USER_EXIT, Address, ResourceMapEntry
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, ResourcesData, WorkerTableData
from gcs_ha.proto.ray.ray_syncer_pb2 import (
    RESOURCE_VIEW,
    RaySyncMessage,
    RaySyncMessageBatch,
    ResourceViewSyncMessage,
)
from gcs_ha.testing.raylet_sim.gcs import GcsStubs

log = logging.getLogger(__name__)

EPSILON = 1e-9
SPREAD_THRESHOLD = 0.5  # Ray's hybrid policy: local until half full
SELF_CHECK_S = 60.0  # raylet_liveness_self_check_interval_ms
SYNC_RETRY_S = 2.0  # a raylet reopens its syncer stream every 2 s
POLL_RETRY_S = 1.0
SYNCER_PATH = "/ray.rpc.syncer.RaySyncer/StartSync"
LIVENESS = pubsub_pb2.GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL
Spill = Callable[[Mapping[str, float], "SimNode"], "SimNode | None"]


class Fleet(Protocol):
    """What a node asks of its fleet (gcs_ha.testing.raylet_sim.fleet.Fleet)."""

    def stubs_for(self, index: int) -> GcsStubs: ...
    def spill_target(self, need: Mapping[str, float], origin: SimNode) -> SimNode | None: ...
    def report_worker(self, node: SimNode, address: Address) -> None: ...
    def background(self, coro: Any) -> None: ...


@dataclass
class Counters:
    """What one node saw; the fleet sums them."""

    health_checks: int = 0
    resource_loads: int = 0
    leases_granted: int = 0
    leases_spilled: int = 0
    leases_rejected: int = 0
    pushes: int = 0
    bundles_prepared: int = 0
    views_sent: int = 0
    views_received: int = 0
    pub_messages: int = 0
    gcs_errors: int = 0
    restarts_notified: int = 0
    calls: list[str] = field(default_factory=list)  # GCS-bound method names, in order


def fits(need: Mapping[str, float], available: Mapping[str, float]) -> bool:
    return all(available.get(k, 0.0) + EPSILON >= v for k, v in need.items())


class SimNode:
    """See the module docstring. `serve()` binds and starts its server; `join()` runs
    the raylet's startup calls and starts its loops; `stop()` ends everything."""

    def __init__(
        self, fleet: Fleet, index: int, ip: str, port: int, resources: Mapping[str, float]
    ) -> None:
        self.fleet = fleet
        self.index = index
        self.node_id = os.urandom(28)
        self.hex = self.node_id.hex()
        self.ip, self.port = ip, port
        self.total = dict(resources)
        self.available = dict(resources)
        self.version = 0
        self.dirty = True
        self.sent_at: dict[int, float] = {}  # version -> monotonic time it was written
        self.workers: dict[bytes, dict[str, float]] = {}  # worker id -> resources held
        self.bundles: dict[tuple[bytes, int], tuple[str, dict[str, float]]] = {}
        self.counters = Counters()
        self.declared_dead = False
        self.registered = asyncio.Event()
        self.subscriber_id = os.urandom(28)
        self._outbox: asyncio.Queue[RaySyncMessageBatch | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stream_up = False
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        servicer = _NodeManager(self)
        nm_grpc.add_NodeManagerServiceServicer_to_server(servicer, self.server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(_Health(self), self.server)
        cw_grpc.add_CoreWorkerServiceServicer_to_server(_CoreWorker(self), self.server)  # type: ignore[no-untyped-call]

    # -- identity ---------------------------------------------------------------------

    @property
    def gcs(self) -> GcsStubs:
        """The GCS stubs this node calls through (its share of the fleet's channels)."""
        return self.fleet.stubs_for(self.index)

    @property
    def address(self) -> Address:
        return Address(node_id=self.node_id, ip_address=self.ip, port=self.port)

    def info(self) -> GcsNodeInfo:
        node = GcsNodeInfo(
            node_id=self.node_id,
            node_manager_address=self.ip,
            node_manager_port=self.port,
            object_manager_port=self.port,
            node_manager_hostname=f"sim-{self.index}",
            node_name=self.ip,
            resources_total=self.total,
            state=GcsNodeInfo.ALIVE,
            is_head_node=self.index == 0,
            start_time_ms=int(time.time() * 1000),
        )
        node.labels["ray.io/node-id"] = self.hex
        return node

    def view(self) -> ResourceViewSyncMessage:
        view = ResourceViewSyncMessage(
            resources_available=self.available, resources_total=self.total
        )
        view.labels["ray.io/node-id"] = self.hex
        return view

    def resources_data(self) -> ResourcesData:
        return ResourcesData(
            node_id=self.node_id,
            resources_available=self.available,
            resources_total=self.total,
            node_manager_address=self.ip,
        )

    def change(self, name: str, delta: float) -> None:
        """Add `delta` to an available resource (a lease, a bundle, a probe)."""
        self.available[name] = self.available.get(name, 0.0) + delta
        self.version += 1
        self.dirty = True

    def set_available(self, name: str, value: float) -> int:
        """Set an available resource (total too, when new); the view's new version."""
        self.total.setdefault(name, max(value, 1.0))
        self.available[name] = value
        self.version += 1
        self.dirty = True
        return self.version

    def utilization(self) -> float:
        cpu = self.total.get("CPU", 0.0)
        return 0.0 if cpu <= 0 else 1.0 - self.available.get("CPU", 0.0) / cpu

    # -- lifecycle --------------------------------------------------------------------

    def bind(self) -> None:
        bound = self.server.add_insecure_port(f"{self.ip}:{self.port}")
        if bound != self.port:
            raise OSError(f"node {self.index}: cannot bind {self.ip}:{self.port}")

    async def serve(self) -> None:
        self.bind()
        await self.server.start()

    async def join(self) -> None:
        """The raylet's startup calls, then its background loops."""
        gcs = self.gcs
        await self._call(
            "GetInternalConfig", gcs.kv.GetInternalConfig(pb.GetInternalConfigRequest(), **gcs.kw)
        )
        await self._call(
            "RegisterNode",
            gcs.node.RegisterNode(pb.RegisterNodeRequest(node_info=self.info()), **gcs.kw),
        )
        self.registered.set()
        await self._subscribe([LIVENESS])
        self._spawn(self._poll_loop())
        await self._call(
            "CheckAlive",
            gcs.node.CheckAlive(pb.CheckAliveRequest(node_ids=[self.node_id]), **gcs.kw),
        )
        await self._call(
            "GetAllNodeAddressAndLiveness",
            gcs.node.GetAllNodeAddressAndLiveness(
                pb.GetAllNodeAddressAndLivenessRequest(), **gcs.kw
            ),
        )
        await self._subscribe([pubsub_pb2.GCS_WORKER_DELTA_CHANNEL, pubsub_pb2.GCS_JOB_CHANNEL])
        self.counters.calls.append("StartSync")  # each reopening is counted in its loop
        self._spawn(self._sync_loop())
        await self._call(
            "GetAllJobInfo",
            gcs.job.GetAllJobInfo(
                pb.GetAllJobInfoRequest(
                    skip_submission_job_info_field=True, skip_is_running_tasks_field=True
                ),
                **gcs.kw,
            ),
        )
        self._spawn(self._self_check_loop())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.stop(None)

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _call(self, name: str, call: Any) -> Any:
        self.counters.calls.append(name)
        return await call

    async def retrying(self, name: str, make: Callable[[], Any]) -> Any:
        """A GCS call retried every second while it fails (Ray queues and replays)."""
        while True:
            try:
                return await self._call(name, make())
            except grpc.aio.AioRpcError:
                self.counters.gcs_errors += 1
                await asyncio.sleep(POLL_RETRY_S)

    # -- pubsub -----------------------------------------------------------------------

    async def _subscribe(self, channels: list[pubsub_pb2.ChannelType]) -> None:
        gcs = self.gcs
        commands = [
            pubsub_pb2.Command(channel_type=c, subscribe_message=pubsub_pb2.SubMessage())
            for c in channels
        ]
        request = pb.GcsSubscriberCommandBatchRequest(
            subscriber_id=self.subscriber_id, commands=commands
        )
        await self.retrying(
            "GcsSubscriberCommandBatch",
            lambda: gcs.pubsub.GcsSubscriberCommandBatch(request, **gcs.kw),
        )

    async def resubscribe(self) -> None:
        """After NotifyGCSRestart, as a raylet does: subscribe again, re-read."""
        await self._subscribe([pubsub_pb2.GCS_JOB_CHANNEL])
        await self._subscribe([LIVENESS, pubsub_pb2.GCS_WORKER_DELTA_CHANNEL])

    async def _poll_loop(self) -> None:
        gcs = self.gcs
        processed, publisher = 0, b""
        while True:
            request = pb.GcsSubscriberPollRequest(
                subscriber_id=self.subscriber_id,
                max_processed_sequence_id=processed,
                publisher_id=publisher,
            )
            try:
                reply = await gcs.pubsub.GcsSubscriberPoll(request, **gcs.kw)
            except grpc.aio.AioRpcError:
                self.counters.gcs_errors += 1
                await asyncio.sleep(POLL_RETRY_S)
                continue
            if reply.publisher_id and reply.publisher_id != publisher:
                publisher, processed = bytes(reply.publisher_id), 0
            for message in reply.pub_messages:
                if message.sequence_id <= processed:
                    continue
                processed = message.sequence_id
                self.counters.pub_messages += 1
                self._consume(message)

    def _consume(self, message: pubsub_pb2.PubMessage) -> None:
        if message.channel_type != LIVENESS:
            return
        liveness = message.node_address_and_liveness_message
        if bytes(liveness.node_id) == self.node_id and liveness.state == GcsNodeInfo.DEAD:
            self.declared_dead = True  # a real raylet would exit here
            log.warning("node %d (%s) was declared dead while alive", self.index, self.hex[:8])

    # -- syncer -----------------------------------------------------------------------

    def flush(self) -> bool:
        """Queue the view if it changed since the last send (the fleet's ticker)."""
        if not self.dirty or not self._stream_up:
            return False
        self.dirty = False
        message = RaySyncMessage(
            version=self.version,
            message_type=RESOURCE_VIEW,
            sync_message=self.view().SerializeToString(),
            node_id=self.node_id,
        )
        self._outbox.put_nowait(RaySyncMessageBatch(messages=[message]))
        return True

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self._sync_once()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                self.counters.gcs_errors += 1
            self._stream_up = False
            await asyncio.sleep(SYNC_RETRY_S)

    async def _sync_once(self) -> None:
        gcs = self.gcs
        self._outbox = asyncio.Queue()
        call = gcs.channel.stream_stream(
            SYNCER_PATH,
            request_serializer=RaySyncMessageBatch.SerializeToString,
            response_deserializer=None,
        )(None, metadata=(("node_id", self.hex),))
        self._stream_up, self.dirty = True, True
        self.flush()
        reader = asyncio.get_running_loop().create_task(self._read_stream(call))
        try:
            while True:
                batch = await self._outbox.get()
                if batch is None or reader.done():
                    break
                await call.write(batch)
                now = time.monotonic()
                for message in batch.messages:
                    self.sent_at[message.version] = now
                self.counters.views_sent += 1
        finally:
            call.cancel()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_stream(self, call: Any) -> None:
        try:
            async for _ in call:
                self.counters.views_received += 1
        finally:
            self._outbox.put_nowait(None)

    def restart_stream(self) -> None:
        self._outbox.put_nowait(None)

    async def _self_check_loop(self) -> None:
        gcs = self.gcs
        while True:
            await asyncio.sleep(SELF_CHECK_S)
            try:
                await self._call(
                    "CheckAlive",
                    gcs.node.CheckAlive(pb.CheckAliveRequest(node_ids=[self.node_id]), **gcs.kw),
                )
            except grpc.aio.AioRpcError:
                self.counters.gcs_errors += 1

    # -- workers ----------------------------------------------------------------------

    def grant(self, need: Mapping[str, float]) -> Address:
        worker_id = os.urandom(28)
        for name, amount in need.items():
            self.change(name, -amount)
        self.workers[worker_id] = dict(need)
        self.counters.leases_granted += 1
        address = Address(
            node_id=self.node_id, ip_address=self.ip, port=self.port, worker_id=worker_id
        )
        self.fleet.report_worker(self, address)
        return address

    def release_worker(self, worker_id: bytes) -> bool:
        need = self.workers.pop(worker_id, None)
        if need is None:
            return False
        for name, amount in need.items():
            self.change(name, amount)
        gcs = self.gcs
        failure = WorkerTableData(
            worker_address=Address(
                node_id=self.node_id, ip_address=self.ip, port=self.port, worker_id=worker_id
            ),
            is_alive=False,
            exit_type=INTENDED_USER_EXIT,
            exit_detail="killed by the GCS (raylet simulator)",
            end_time_ms=int(time.time() * 1000),
        )
        self.fleet.background(
            self.retrying("ReportWorkerFailure", lambda: gcs.worker.ReportWorkerFailure(
                pb.ReportWorkerFailureRequest(worker_failure=failure), **gcs.kw))
        )  # fmt: skip
        return True


def _bundle_key(bundle: Any) -> tuple[bytes, int]:
    return bytes(bundle.bundle_id.placement_group_id), int(bundle.bundle_id.bundle_index)


class _Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1: SERVING for this node's id (and ""), NOT_FOUND for another."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        self.node.counters.health_checks += 1
        if request.service not in ("", self.node.hex):
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class _CoreWorker(cw_grpc.CoreWorkerServiceServicer):
    """The leased workers' side: PushTask (the actor's constructor) succeeds at once."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    async def PushTask(self, request: cw.PushTaskRequest, context: Any) -> cw.PushTaskReply:
        self.node.counters.pushes += 1
        if bytes(request.intended_worker_id) not in self.node.workers:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no such worker")
        return cw.PushTaskReply(actor_repr_name=request.task_spec.name)

    async def WaitForActorRefDeleted(
        self, request: cw.WaitForActorRefDeletedRequest, context: Any
    ) -> cw.WaitForActorRefDeletedReply:
        await asyncio.Event().wait()  # the owner keeps its references until it stops
        return cw.WaitForActorRefDeletedReply()

    async def NumPendingTasks(
        self, request: cw.NumPendingTasksRequest, context: Any
    ) -> cw.NumPendingTasksReply:
        return cw.NumPendingTasksReply()


class _NodeManager(nm_grpc.NodeManagerServiceServicer):
    """The raylet's NodeManagerService as the GCS calls it (contract section 8)."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    async def GetResourceLoad(
        self, request: nm.GetResourceLoadRequest, context: Any
    ) -> nm.GetResourceLoadReply:
        self.node.counters.resource_loads += 1
        return nm.GetResourceLoadReply(resources=self.node.resources_data())

    async def RequestWorkerLease(
        self, request: nm.RequestWorkerLeaseRequest, context: Any
    ) -> nm.RequestWorkerLeaseReply:
        node = self.node
        need = dict(request.lease_spec.required_resources)
        local = fits(need, node.available) and (
            node.utilization() < SPREAD_THRESHOLD or request.grant_or_reject
        )
        if local:
            mapping = [ResourceMapEntry(name=k) for k in need]
            return nm.RequestWorkerLeaseReply(
                worker_address=node.grant(need), worker_pid=4242, resource_mapping=mapping
            )
        if request.grant_or_reject:
            node.counters.leases_rejected += 1
            return nm.RequestWorkerLeaseReply(rejected=True)
        other = node.fleet.spill_target(need, node)
        if other is None or other is node:
            if fits(need, node.available):
                return nm.RequestWorkerLeaseReply(worker_address=node.grant(need), worker_pid=4242)
            node.counters.leases_rejected += 1
            return nm.RequestWorkerLeaseReply(rejected=True)
        node.counters.leases_spilled += 1
        return nm.RequestWorkerLeaseReply(retry_at_raylet_address=other.address)

    async def CancelWorkerLease(
        self, request: nm.CancelWorkerLeaseRequest, context: Any
    ) -> nm.CancelWorkerLeaseReply:
        return nm.CancelWorkerLeaseReply()

    async def KillLocalActor(
        self, request: nm.KillLocalActorRequest, context: Any
    ) -> nm.KillLocalActorReply:
        self.node.release_worker(bytes(request.worker_id))
        return nm.KillLocalActorReply()

    async def IsLocalWorkerDead(
        self, request: nm.IsLocalWorkerDeadRequest, context: Any
    ) -> nm.IsLocalWorkerDeadReply:
        return nm.IsLocalWorkerDeadReply(is_dead=bytes(request.worker_id) not in self.node.workers)

    async def PrepareBundleResources(
        self, request: nm.PrepareBundleResourcesRequest, context: Any
    ) -> nm.PrepareBundleResourcesReply:
        node = self.node
        fresh = [b for b in request.bundle_specs if _bundle_key(b) not in node.bundles]
        need: dict[str, float] = {}
        for bundle in fresh:
            for name, amount in bundle.unit_resources.items():
                need[name] = need.get(name, 0.0) + amount
        if not fits(need, node.available):
            return nm.PrepareBundleResourcesReply(success=False)
        for bundle in fresh:
            node.bundles[_bundle_key(bundle)] = ("prepared", dict(bundle.unit_resources))
        for name, amount in need.items():
            node.change(name, -amount)
        node.counters.bundles_prepared += len(fresh)
        return nm.PrepareBundleResourcesReply(success=True)

    async def CommitBundleResources(
        self, request: nm.CommitBundleResourcesRequest, context: Any
    ) -> nm.CommitBundleResourcesReply:
        for bundle in request.bundle_specs:
            key = _bundle_key(bundle)
            if key in self.node.bundles:
                self.node.bundles[key] = ("committed", self.node.bundles[key][1])
        return nm.CommitBundleResourcesReply()

    async def RemovePlacementGroupBundles(
        self, request: nm.RemovePlacementGroupBundlesRequest, context: Any
    ) -> nm.RemovePlacementGroupBundlesReply:
        for bundle in request.bundle_specs:
            self._free(_bundle_key(bundle))
        return nm.RemovePlacementGroupBundlesReply()

    async def ReleaseUnusedBundles(
        self, request: nm.ReleaseUnusedBundlesRequest, context: Any
    ) -> nm.ReleaseUnusedBundlesReply:
        keep = {_bundle_key(b) for b in request.bundles_in_use}
        for key in [k for k in self.node.bundles if k not in keep]:
            self._free(key)
        return nm.ReleaseUnusedBundlesReply()

    async def ReleaseUnusedActorWorkers(
        self, request: nm.ReleaseUnusedActorWorkersRequest, context: Any
    ) -> nm.ReleaseUnusedActorWorkersReply:
        keep = {bytes(w) for w in request.worker_ids_in_use}
        for worker in [w for w in self.node.workers if w not in keep]:
            self.node.release_worker(worker)
        return nm.ReleaseUnusedActorWorkersReply()

    async def NotifyGCSRestart(
        self, request: nm.NotifyGCSRestartRequest, context: Any
    ) -> nm.NotifyGCSRestartReply:
        self.node.counters.restarts_notified += 1
        self.node.fleet.background(self.node.resubscribe())
        self.node.restart_stream()
        return nm.NotifyGCSRestartReply()

    async def DrainRaylet(
        self, request: nm.DrainRayletRequest, context: Any
    ) -> nm.DrainRayletReply:
        return nm.DrainRayletReply(is_accepted=True)

    async def ShutdownRaylet(
        self, request: nm.ShutdownRayletRequest, context: Any
    ) -> nm.ShutdownRayletReply:
        return nm.ShutdownRayletReply()

    def _free(self, key: tuple[bytes, int]) -> None:
        if key not in self.node.bundles:
            return
        _, resources = self.node.bundles.pop(key)
        for name, amount in resources.items():
            self.node.change(name, amount)
