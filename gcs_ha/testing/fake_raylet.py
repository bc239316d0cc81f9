"""A raylet's gRPC surface on loopback: the one raylet stand-in of the tests.

`FakeRaylet` is a real grpc.aio server serving NodeManagerService and grpc health,
answering leases, bundles, load, drain and the restart calls as Ray's raylet does; tests
steer it and read what it received. What it answers: DESIGN.md ("FakeRaylet").
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.proto.ray.common_pb2 import Address, Bundle, ResourceMapEntry
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, ResourcesData
from gcs_ha.proto.ray.ray_syncer_pb2 import ResourceViewSyncMessage
from gcs_ha.testing.actor_fakes import EXCLUSIVE_PORT, FakeWorker, RayletRecord, bind

BundleKey = tuple[bytes, int]  # (placement group id, bundle index)
ViewReport = Callable[[bytes, ResourceViewSyncMessage], object]
Reply = nm.RequestWorkerLeaseReply
REPORT_DELAY_S = 0.02
SERVING = health_pb2.HealthCheckResponse.SERVING


def bundle_key(bundle: Bundle) -> BundleKey:
    return bytes(bundle.bundle_id.placement_group_id), int(bundle.bundle_id.bundle_index)


def node_info(
    node_id: bytes, port: int = 0, resources: Mapping[str, float] | None = None, **fields: Any
) -> GcsNodeInfo:
    """An ALIVE node on 127.0.0.1:`port` (4 CPUs unless `resources` says), named after its
    id; `fields` are further GcsNodeInfo fields."""
    node = GcsNodeInfo(
        node_id=node_id,
        node_manager_address="127.0.0.1",
        node_manager_port=port,
        node_name=f"node-{node_id.hex()[:8]}",
        resources_total=dict({"CPU": 4.0} if resources is None else resources),
        state=GcsNodeInfo.ALIVE,
    )
    node.MergeFrom(GcsNodeInfo(**fields))
    return node


class ScriptedHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """A raylet's health service (DESIGN.md); counts checks."""

    def __init__(self, node_id: bytes, script: list[int] | None = None) -> None:
        self.node_hex = node_id.hex()
        self.script = list(script or [SERVING])
        self.checks = 0

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        self.checks += 1
        if request.service != self.node_hex:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        status = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return health_pb2.HealthCheckResponse(status=status)


class FakeRaylet(nm_grpc.NodeManagerServiceServicer):
    """See the module docstring. The raylet of `node` listens on its node_manager_port, or,
    given `ports`, on the first free one of them (written into `node`; its workers take
    the next ones). `start()` serves it, `stop()` ends it (a dead raylet)."""

    def __init__(
        self,
        node: GcsNodeInfo,
        *,
        ports: Iterator[int] | None = None,
        report: ViewReport | None = None,
        health_script: list[int] | None = None,
    ) -> None:
        self.node = node
        self.total = dict(node.resources_total)
        self.available = dict(node.resources_total)
        self.report_to = report
        self.health = ScriptedHealth(self.node_id, health_script)
        self.requests: list[tuple[str, Any]] = []
        self.metadata: dict[str, Any] = {}
        self._steering()
        self.server = grpc.aio.server(options=EXCLUSIVE_PORT)
        nm_grpc.add_NodeManagerServiceServicer_to_server(self, self.server)  # type: ignore[no-untyped-call]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if ports is None:
            address = f"127.0.0.1:{node.node_manager_port}"
            node.node_manager_port = self.server.add_insecure_port(address)
            ports = itertools.count(self.port + 1)
        else:
            node.node_manager_port = bind(self.server, ports)
        self.ports = ports

    def _steering(self) -> None:
        """What tests set, and the bookkeeping behind the answers."""
        self.bundles: dict[BundleKey, tuple[str, dict[str, float]]] = {}
        self.released_with: list[list[BundleKey]] = []
        self.refuse_prepare = False
        self.fail_commit = False
        self.hold_prepare: asyncio.Event | None = None
        self.hold_commit: asyncio.Event | None = None
        self.load = ResourcesData(node_id=self.node_id)
        self.accept_drain = True
        self.record = RayletRecord()
        self.policies: list[Reply | str] = []
        self.workers: dict[bytes, FakeWorker] = {}
        self.dead_workers: set[bytes] = set()
        self.held: list[asyncio.Future[None]] = []

    @property
    def node_id(self) -> bytes:
        return bytes(self.node.node_id)

    @property
    def port(self) -> int:
        return int(self.node.node_manager_port)

    @property
    def calls(self) -> list[str]:
        """The names of the methods called, in order."""
        return [name for name, _ in self.requests]

    def received(self, method: str) -> list[Any]:
        """The requests of `method` received, in order."""
        return [request for name, request in self.requests if name == method]

    async def start(self) -> FakeRaylet:
        await self.server.start()
        return self

    async def stop(self) -> None:
        for future in self.held:
            if not future.done():
                future.cancel()
        await self.server.stop(None)
        for worker in self.workers.values():
            await worker.stop()

    def committed(self) -> list[BundleKey]:
        """The committed bundles, sorted."""
        return sorted(k for k, (state, _) in self.bundles.items() if state == "committed")

    def report(self) -> None:
        """Send the current view to `report_to` shortly (as the syncer would)."""
        if self.report_to is None:
            return
        view = ResourceViewSyncMessage(
            resources_available=self.available, resources_total=self.total
        )
        asyncio.get_running_loop().call_later(REPORT_DELAY_S, self.report_to, self.node_id, view)

    def release_held(self) -> None:
        """Answer the lease requests held by a "hold" policy."""
        for future in self.held:
            if not future.done():
                future.set_result(None)

    def _got(self, name: str, request: Any) -> None:
        self.requests.append((name, request))

    # -- leases ----------------------------------------------------------------------------

    async def grant(self, request: nm.RequestWorkerLeaseRequest) -> Reply:
        worker = await FakeWorker(self.node_id, self.ports).start()
        self.workers[worker.worker_id] = worker
        mapping = ResourceMapEntry(name="CPU")
        mapping.resource_ids.add(index=0, quantity=1.0)
        return Reply(
            worker_address=worker.address, worker_pid=1000 + worker.port, resource_mapping=[mapping]
        )

    async def RequestWorkerLease(
        self, request: nm.RequestWorkerLeaseRequest, context: Any
    ) -> Reply:
        """`policies` says what to do with the next requests: a Reply to send, "fail"
        (abort UNAVAILABLE), "hold" (no answer until `release_held`), or "grant"; when
        empty, leases are granted."""
        self._got("RequestWorkerLease", request)
        self.record.leases.append(request)
        policy = self.policies.pop(0) if self.policies else "grant"
        if policy == "fail":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "raylet busy")
        if policy == "hold":
            future = asyncio.get_running_loop().create_future()
            self.held.append(future)
            await future
            return await self.grant(request)
        if isinstance(policy, Reply):
            return policy
        return await self.grant(request)

    async def CancelWorkerLease(
        self, request: nm.CancelWorkerLeaseRequest, context: Any
    ) -> nm.CancelWorkerLeaseReply:
        self._got("CancelWorkerLease", request)
        self.record.cancels.append(bytes(request.lease_id))
        return nm.CancelWorkerLeaseReply()

    async def KillLocalActor(
        self, request: nm.KillLocalActorRequest, context: Any
    ) -> nm.KillLocalActorReply:
        self._got("KillLocalActor", request)
        self.record.kills.append(request)
        return nm.KillLocalActorReply()

    async def IsLocalWorkerDead(
        self, request: nm.IsLocalWorkerDeadRequest, context: Any
    ) -> nm.IsLocalWorkerDeadReply:
        self._got("IsLocalWorkerDead", request)
        return nm.IsLocalWorkerDeadReply(is_dead=bytes(request.worker_id) in self.dead_workers)

    async def ReleaseUnusedActorWorkers(
        self, request: nm.ReleaseUnusedActorWorkersRequest, context: Any
    ) -> nm.ReleaseUnusedActorWorkersReply:
        self._got("ReleaseUnusedActorWorkers", request)
        self.record.releases.append([bytes(w) for w in request.worker_ids_in_use])
        return nm.ReleaseUnusedActorWorkersReply()

    # -- bundles ---------------------------------------------------------------------------

    async def PrepareBundleResources(
        self, request: nm.PrepareBundleResourcesRequest, context: Any
    ) -> nm.PrepareBundleResourcesReply:
        self._got("PrepareBundleResources", request)
        fresh = [b for b in request.bundle_specs if bundle_key(b) not in self.bundles]
        need: dict[str, float] = {}
        for bundle in fresh:
            for name, amount in bundle.unit_resources.items():
                need[name] = need.get(name, 0.0) + amount
        short = any(self.available.get(k, 0.0) < v - 1e-9 for k, v in need.items())
        if self.refuse_prepare or short:
            return nm.PrepareBundleResourcesReply(success=False)
        for bundle in fresh:
            self.bundles[bundle_key(bundle)] = ("prepared", dict(bundle.unit_resources))
        for name, amount in need.items():
            self.available[name] -= amount
        self.report()
        if self.hold_prepare is not None:
            await self.hold_prepare.wait()
        return nm.PrepareBundleResourcesReply(success=True)

    async def CommitBundleResources(
        self,
        request: nm.CommitBundleResourcesRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> nm.CommitBundleResourcesReply:
        self._got("CommitBundleResources", request)
        if self.fail_commit:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "commit refused by the test")
        for bundle in request.bundle_specs:
            key = bundle_key(bundle)
            if key in self.bundles:  # an unknown (cancelled) bundle is skipped, as in Ray
                self.bundles[key] = ("committed", self.bundles[key][1])
        self.report()
        if self.hold_commit is not None:
            await self.hold_commit.wait()
        return nm.CommitBundleResourcesReply()

    async def RemovePlacementGroupBundles(
        self, request: nm.RemovePlacementGroupBundlesRequest, context: Any
    ) -> nm.RemovePlacementGroupBundlesReply:
        self._got("RemovePlacementGroupBundles", request)
        for bundle in request.bundle_specs:
            self._free(bundle_key(bundle))
        self.report()
        return nm.RemovePlacementGroupBundlesReply()

    async def ReleaseUnusedBundles(
        self, request: nm.ReleaseUnusedBundlesRequest, context: Any
    ) -> nm.ReleaseUnusedBundlesReply:
        self._got("ReleaseUnusedBundles", request)
        keep = {bundle_key(b) for b in request.bundles_in_use}
        self.released_with.append(sorted(keep))
        for key in [k for k in self.bundles if k not in keep]:
            self._free(key)
        self.report()
        return nm.ReleaseUnusedBundlesReply()

    def _free(self, key: BundleKey) -> None:
        if key not in self.bundles:
            return
        _, resources = self.bundles.pop(key)
        for name, amount in resources.items():
            self.available[name] = self.available.get(name, 0.0) + amount

    # -- the node ----------------------------------------------------------------------------

    async def NotifyGCSRestart(
        self, request: nm.NotifyGCSRestartRequest, context: Any
    ) -> nm.NotifyGCSRestartReply:
        self._got("NotifyGCSRestart", request)
        self.metadata = dict(context.invocation_metadata())
        return nm.NotifyGCSRestartReply()

    async def ShutdownRaylet(
        self, request: nm.ShutdownRayletRequest, context: Any
    ) -> nm.ShutdownRayletReply:
        self._got("ShutdownRaylet", request)
        return nm.ShutdownRayletReply()

    async def GetResourceLoad(
        self, request: nm.GetResourceLoadRequest, context: Any
    ) -> nm.GetResourceLoadReply:
        self._got("GetResourceLoad", request)
        return nm.GetResourceLoadReply(resources=self.load)

    async def DrainRaylet(
        self, request: nm.DrainRayletRequest, context: Any
    ) -> nm.DrainRayletReply:
        self._got("DrainRaylet", request)
        if self.accept_drain:
            return nm.DrainRayletReply(is_accepted=True)
        return nm.DrainRayletReply(is_accepted=False, rejection_reason_message="busy")

    async def ResizeLocalResourceInstances(
        self, request: nm.ResizeLocalResourceInstancesRequest, context: Any
    ) -> nm.ResizeLocalResourceInstancesReply:
        self._got("ResizeLocalResourceInstances", request)
        return nm.ResizeLocalResourceInstancesReply(total_resources=dict(request.resources))


def spillback(target: FakeRaylet) -> Reply:
    """A lease reply that sends the caller on to `target`."""
    return Reply(
        retry_at_raylet_address=Address(
            node_id=target.node_id, ip_address="127.0.0.1", port=target.port
        )
    )


def rejected() -> Reply:
    return Reply(rejected=True)


def canceled(failure_type: int, message: str) -> Reply:
    return Reply(canceled=True, failure_type=failure_type, scheduling_failure_message=message)  # type: ignore[arg-type]
