"""A raylet's placement-group surface on loopback, for testing the GCS's placement.

`BundleRaylet` is a real grpc.aio NodeManagerService server that keeps a raylet's
bundle bookkeeping the way Ray's raylet does (placement_group_resource_manager):
PrepareBundleResources reserves every bundle of the call from its own resources or none
(success=false); preparing a bundle it already has succeeds without reserving again;
CommitBundleResources commits prepared bundles and skips unknown ones (a commit after a
cancel); RemovePlacementGroupBundles and ReleaseUnusedBundles return bundles, prepared
or committed. After each change it reports its resource view to `report(node_id, view)`
shortly after replying, as the raylet's syncer would. NotifyGCSRestart and
ReleaseUnusedActorWorkers are answered (the node manager's greeting after a failover).

Tests steer it: `refuse_prepare`, `fail_commit` (the call fails with UNAVAILABLE),
`hold_prepare` / `hold_commit` (an event the reply waits for, after the change is made:
a reply lost with the leader). `calls` lists the method names received, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import grpc
import grpc.aio

from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.proto.ray.common_pb2 import Bundle
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.proto.ray.ray_syncer_pb2 import ResourceViewSyncMessage

BundleKey = tuple[bytes, int]  # (placement group id, bundle index)
ViewReport = Callable[[bytes, ResourceViewSyncMessage], object]
REPORT_DELAY_S = 0.02


def bundle_key(bundle: Bundle) -> BundleKey:
    return bytes(bundle.bundle_id.placement_group_id), int(bundle.bundle_id.bundle_index)


class BundleRaylet(nm_grpc.NodeManagerServiceServicer):
    """See the module docstring. `start()` serves it, `stop()` ends it (a dead raylet)."""

    def __init__(
        self,
        node_id: bytes,
        port: int,
        resources: Mapping[str, float],
        report: ViewReport | None = None,
    ) -> None:
        self.node = GcsNodeInfo(
            node_id=node_id,
            node_manager_address="127.0.0.1",
            node_manager_port=port,
            node_name=f"node-{node_id.hex()[:8]}",
            resources_total=dict(resources),
            state=GcsNodeInfo.ALIVE,
        )
        self.total = dict(resources)
        self.available = dict(resources)
        self.bundles: dict[BundleKey, tuple[str, dict[str, float]]] = {}
        self.calls: list[str] = []
        self.released_with: list[list[BundleKey]] = []
        self.refuse_prepare = False
        self.fail_commit = False
        self.hold_prepare: asyncio.Event | None = None
        self.hold_commit: asyncio.Event | None = None
        self.report_to = report
        self.server = grpc.aio.server()
        nm_grpc.add_NodeManagerServiceServicer_to_server(self, self.server)  # type: ignore[no-untyped-call]
        self.server.add_insecure_port(f"127.0.0.1:{port}")

    @property
    def id(self) -> bytes:
        return bytes(self.node.node_id)

    async def start(self) -> BundleRaylet:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop(None)

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
        asyncio.get_running_loop().call_later(REPORT_DELAY_S, self.report_to, self.id, view)

    # -- NodeManagerService --------------------------------------------------------------

    async def PrepareBundleResources(
        self, request: nm.PrepareBundleResourcesRequest, context: object
    ) -> nm.PrepareBundleResourcesReply:
        self.calls.append("Prepare")
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
        self.calls.append("Commit")
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
        self, request: nm.RemovePlacementGroupBundlesRequest, context: object
    ) -> nm.RemovePlacementGroupBundlesReply:
        self.calls.append("Remove")
        for bundle in request.bundle_specs:
            self._free(bundle_key(bundle))
        self.report()
        return nm.RemovePlacementGroupBundlesReply()

    async def ReleaseUnusedBundles(
        self, request: nm.ReleaseUnusedBundlesRequest, context: object
    ) -> nm.ReleaseUnusedBundlesReply:
        self.calls.append("Release")
        keep = {bundle_key(b) for b in request.bundles_in_use}
        self.released_with.append(sorted(keep))
        for key in [k for k in self.bundles if k not in keep]:
            self._free(key)
        self.report()
        return nm.ReleaseUnusedBundlesReply()

    async def NotifyGCSRestart(
        self, request: nm.NotifyGCSRestartRequest, context: object
    ) -> nm.NotifyGCSRestartReply:
        return nm.NotifyGCSRestartReply()

    async def ReleaseUnusedActorWorkers(
        self, request: nm.ReleaseUnusedActorWorkersRequest, context: object
    ) -> nm.ReleaseUnusedActorWorkersReply:
        return nm.ReleaseUnusedActorWorkersReply()

    def _free(self, key: BundleKey) -> None:
        if key not in self.bundles:
            return
        _, resources = self.bundles.pop(key)
        for name, amount in resources.items():
            self.available[name] = self.available.get(name, 0.0) + amount
