"""The resource manager (Ray's GcsResourceManager): the GCS's view of cluster resources per
ALIVE node, fed by the syncer's RESOURCE_VIEW messages (`consume_sync_message`) and a
periodic GetResourceLoad pull; it answers NodeResourceInfoGcsService and is what the
schedulers (`resource_view`) and the autoscaler state read. Details: DESIGN.md,
"Module notes".

Errors: none of its own; the raylet pool's UnavailableError is caught and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf.message import DecodeError

from gcs_ha.errors import GcsHaError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.system_config import Setting, apply_settings
from gcs_ha.proto.ray import gcs_service_pb2 as gs
from gcs_ha.proto.ray.gcs_pb2 import (
    AvailableResources,
    GcsNodeInfo,
    PlacementGroupLoad,
    ResourceDemand,
    ResourcesData,
    ResourceUsageBatchData,
    TotalResources,
)
from gcs_ha.proto.ray.node_manager_pb2 import GetResourceLoadReply
from gcs_ha.proto.ray.ray_syncer_pb2 import (
    RESOURCE_VIEW,
    RaySyncMessage,
    ResourceViewSyncMessage,
)

log = logging.getLogger(__name__)

PULL_PERIOD_S = 1.0  # gcs_pull_resource_loads_period_milliseconds
MAX_DEAD_NODES = 1000  # maximum_gcs_dead_node_cached_count
IMPLICIT_RESOURCE_PREFIX = "node:__internal_implicit_resource_"

ViewListener = Callable[[bytes, ResourceViewSyncMessage], None]

SETTINGS = {  # Ray's system config
    "gcs_pull_resource_loads_period_milliseconds": Setting("_pull_period_s", 0.001, minimum=1),
    "maximum_gcs_dead_node_cached_count": Setting("_max_dead"),
}


class NodeView(Protocol):
    """What the schedulers read of a node's resources (a ResourceViewSyncMessage, or the
    node's ResourcesData before its first view). Read-only: do not modify."""

    @property
    def resources_available(self) -> Mapping[str, float]: ...

    @property
    def resources_total(self) -> Mapping[str, float]: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def is_draining(self) -> bool: ...


class ResourceLoadSource(Protocol):
    """The part of the RayletClientPool port the pull uses."""

    async def get_resource_load(self, node: GcsNodeInfo) -> object: ...


@dataclass
class PulledUsage:
    """A node's last GetResourceLoad report and when it arrived (time.monotonic())."""

    data: ResourcesData
    at: float


class ResourceManager:
    """Per-node resource views, demand and drain state (a Manager: "resource")."""

    def __init__(
        self,
        raylets: ResourceLoadSource | None = None,
        pull_period_s: float = PULL_PERIOD_S,
        max_dead_nodes: int = MAX_DEAD_NODES,
    ) -> None:
        self._raylets = raylets
        self._pull_period_s = pull_period_s
        self._max_dead = max_dead_nodes
        self._alive: dict[bytes, GcsNodeInfo] = {}
        self._dead: OrderedDict[bytes, GcsNodeInfo] = OrderedDict()
        self._views: dict[bytes, ResourcesData] = {}
        self._latest: dict[bytes, ResourceViewSyncMessage] = {}  # read in place
        self._stale: set[bytes] = set()  # nodes whose _views lag their _latest
        self._pulled: dict[bytes, PulledUsage] = {}
        self._activity: dict[bytes, list[str]] = {}
        self._pg_load: PlacementGroupLoad | None = None
        self._in_flight: set[bytes] = set()
        self._failing: set[bytes] = set()
        self._listeners: list[ViewListener] = []
        self._tasks = BackgroundTasks("resource")

    # -- Manager lifecycle -------------------------------------------------------------

    @property
    def name(self) -> str:
        return "resource"

    async def start(self, init: GcsInitData) -> None:
        """Rebuild from the node table; start pulling resource loads."""
        self._clear()
        for node in init.nodes.values():
            if node.state == GcsNodeInfo.ALIVE:
                self.on_node_added(node)
            else:
                self._remember_dead(node)
        if self._raylets is not None and self._pull_period_s > 0:
            self._tasks.spawn(self._pull_forever(), "pull-resource-loads")

    async def stop(self) -> None:
        """Stop pulling (cancels pulls in flight) and drop every view."""
        await self._tasks.cancel_all()
        self._clear()

    def _clear(self) -> None:
        tables = (self._alive, self._dead, self._views, self._latest, self._pulled)
        for table in (*tables, self._activity, self._stale, self._in_flight, self._failing):
            table.clear()
        self._pg_load = None

    # -- hooks: node manager, syncer hub, placement groups, autoscaler -----------------

    def apply_system_config(self, config: Mapping[str, Any]) -> None:
        """Ray's settings of this manager in the head's system config (SETTINGS)."""
        apply_settings(self, config, SETTINGS)

    def add_view_listener(self, listener: ViewListener) -> None:
        """Call `listener(node_id, view)` after each accepted view of an ALIVE node (the
        node manager keeps its state snapshot from it; schedulers retry pending work)."""
        self._listeners.append(listener)

    def on_node_added(self, node: GcsNodeInfo) -> None:
        """A node registered (or was ALIVE in the table at start). Idempotent: a view
        the node already sent is kept."""
        node_id = bytes(node.node_id)
        self._alive[node_id] = node
        self._dead.pop(node_id, None)
        if node_id not in self._views:
            self._views[node_id] = _initial_data(node)
            self._pulled[node_id] = PulledUsage(_initial_data(node), time.monotonic())

    def on_node_dead(self, node: GcsNodeInfo) -> None:
        """A node was declared DEAD (or left): forget its view; keep its info."""
        node_id = bytes(node.node_id)
        self._alive.pop(node_id, None)
        for table in (self._views, self._latest, self._pulled, self._activity):
            table.pop(node_id, None)
        self._stale.discard(node_id)
        self._remember_dead(node)

    def consume_sync_message(self, message: RaySyncMessage) -> None:
        """The syncer hub's receiver: RESOURCE_VIEW messages update the node's view;
        COMMANDS are not for the GCS (as in Ray)."""
        if message.message_type != RESOURCE_VIEW:
            return
        view = ResourceViewSyncMessage()
        try:
            view.ParseFromString(message.sync_message)
        except DecodeError:
            log.warning("unreadable resource view from node %s", message.node_id.hex())
            return
        self.update_from_view(bytes(message.node_id), view)

    def update_from_view(self, node_id: bytes, view: ResourceViewSyncMessage) -> bool:
        """Take a raylet's resource view (kept as it is: the caller must not modify it
        afterwards); False for a node that is not ALIVE here. A view without totals or
        labels keeps the node's earlier ones."""
        if node_id not in self._views:
            return False
        if not view.resources_total or not view.labels:
            earlier = self._latest.get(node_id)
            _inherit(view, self._views[node_id] if earlier is None else earlier)
        self._latest[node_id] = view
        self._stale.add(node_id)
        self._activity[node_id] = list(view.node_activity)
        for listener in list(self._listeners):
            try:
                listener(node_id, view)
            except Exception:
                log.exception("resource view listener failed for %s", node_id.hex())
        return True

    def update_resource_loads(self, data: ResourcesData) -> bool:
        """Apply one GetResourceLoad report: the node's demand goes into its view, the
        whole report becomes its pulled usage, and its availability stands in for the
        syncer's view until the first one arrives. False for a node that is not ALIVE."""
        node_id = bytes(data.node_id)
        view = self._views.get(node_id)
        if view is None:
            return False
        view.ClearField("resource_load")
        view.resource_load.update(data.resource_load)
        view.resource_load_by_shape.CopyFrom(data.resource_load_by_shape)
        self._pulled[node_id] = PulledUsage(_copy(data), time.monotonic())
        if node_id not in self._latest and data.resources_total:
            self.update_from_view(node_id, _view_of_report(data))
        return True

    def update_placement_group_load(self, load: PlacementGroupLoad | None) -> None:
        """The placement groups waiting for resources (from the placement group manager)."""
        self._pg_load = None if load is None else _copy(load)

    def set_node_draining(self, node_id: bytes, deadline_timestamp_ms: int) -> None:
        """Mark a node draining at once (its raylet accepted a drain); its next view and
        report say the same."""
        targets = (self._views.get(node_id), self._latest.get(node_id), self._pulled_data(node_id))
        for data in targets:
            if data is not None:
                data.is_draining = True
                data.draining_deadline_timestamp_ms = deadline_timestamp_ms

    # -- the GetResourceLoad pull ------------------------------------------------------

    async def pull_resource_loads(self) -> None:
        """One pull round: GetResourceLoad from every ALIVE node not already being
        pulled, concurrently; returns when all answered or failed."""
        nodes = [n for nid, n in self._alive.items() if nid not in self._in_flight]
        await asyncio.gather(*(self._pull(node) for node in nodes))

    async def _pull_forever(self) -> None:
        while True:
            for node_id, node in list(self._alive.items()):
                if node_id not in self._in_flight:
                    self._tasks.spawn(self._pull(node), f"pull-{node_id.hex()[:8]}")
            await asyncio.sleep(self._pull_period_s)

    async def _pull(self, node: GcsNodeInfo) -> None:
        assert self._raylets is not None
        node_id = bytes(node.node_id)
        self._in_flight.add(node_id)
        try:
            reply = await self._raylets.get_resource_load(node)
        except GcsHaError as exc:
            if node_id not in self._failing:
                self._failing.add(node_id)
                log.warning("GetResourceLoad failed (logged once per streak): %s", exc)
            return
        finally:
            self._in_flight.discard(node_id)
        self._failing.discard(node_id)
        if isinstance(reply, GetResourceLoadReply):
            data = _copy(reply.resources)
            data.node_id = node_id  # the raylet sets it; the GCS knows whom it asked
            self.update_resource_loads(data)

    # -- reading -----------------------------------------------------------------------

    def alive_nodes(self) -> dict[bytes, GcsNodeInfo]:
        return dict(self._alive)

    def dead_nodes(self) -> dict[bytes, GcsNodeInfo]:
        return dict(self._dead)

    def resource_view(self) -> dict[bytes, NodeView]:
        """Every ALIVE node's current view (the messages themselves: do not modify)."""
        return {nid: self._latest.get(nid, data) for nid, data in self._views.items()}

    def pulled_usage(self, node_id: bytes) -> PulledUsage | None:
        return self._pulled.get(node_id)

    def node_activity(self, node_id: bytes) -> list[str]:
        return list(self._activity.get(node_id, ()))

    def placement_group_load(self) -> PlacementGroupLoad | None:
        return self._pg_load

    def available_resources(self) -> list[AvailableResources]:
        """GetAllAvailableResources: per node, the resources it has left (zero and
        implicit resources omitted, as Ray's explicit resource ids are)."""
        return [
            AvailableResources(node_id=nid, resources_available=_explicit(d.resources_available))
            for nid, d in self.resource_view().items()
        ]

    def total_resources(self) -> list[TotalResources]:
        """GetAllTotalResources: per node, its resource capacities."""
        return [
            TotalResources(node_id=nid, resources_total=_explicit(d.resources_total))
            for nid, d in self.resource_view().items()
        ]

    def draining_nodes(self) -> list[gs.DrainingNode]:
        """GetDrainingNodes: the nodes whose view says they are draining."""
        return [
            gs.DrainingNode(
                node_id=nid, draining_deadline_timestamp_ms=d.draining_deadline_timestamp_ms
            )
            for nid, d in self._full_views()
            if d.is_draining
        ]

    def resource_usage(self) -> ResourceUsageBatchData:
        """GetAllResourceUsage: every node's view, the demand summed by shape, and the
        placement groups waiting for resources."""
        batch = ResourceUsageBatchData()
        if not self._views:
            return batch
        views = [data for _, data in self._full_views()]
        batch.batch.extend(views)
        batch.resource_load_by_shape.resource_demands.extend(aggregate_demand(views))
        if self._pg_load is not None:
            batch.placement_group_load.CopyFrom(self._pg_load)
        return batch

    # -- internals ---------------------------------------------------------------------

    def _full_views(self) -> list[tuple[bytes, ResourcesData]]:
        return [(node_id, self._current(node_id)) for node_id in self._views]

    def _current(self, node_id: bytes) -> ResourcesData:
        """The node's ResourcesData with its latest view copied in (O(resources), so
        only when a reader needs the whole record)."""
        data = self._views[node_id]
        view = self._latest.get(node_id)
        if view is not None and node_id in self._stale:
            self._stale.discard(node_id)
            _copy_view_fields(view, data)
        return data

    def _pulled_data(self, node_id: bytes) -> ResourcesData | None:
        pulled = self._pulled.get(node_id)
        return None if pulled is None else pulled.data

    def _remember_dead(self, node: GcsNodeInfo) -> None:
        node_id = bytes(node.node_id)
        self._dead.pop(node_id, None)
        self._dead[node_id] = node
        while len(self._dead) > self._max_dead:
            self._dead.popitem(last=False)


def aggregate_demand(reports: Iterable[ResourcesData]) -> list[ResourceDemand]:
    """Sum the nodes' queued demand per (shape, label selectors) (Ray's FillAggregateLoad)."""
    total: dict[tuple[tuple[tuple[str, float], ...], tuple[bytes, ...]], ResourceDemand] = {}
    for report in reports:
        for demand in report.resource_load_by_shape.resource_demands:
            key = (
                tuple(sorted(demand.shape.items())),
                tuple(s.SerializeToString(deterministic=True) for s in demand.label_selectors),
            )
            summed = total.get(key)
            if summed is None:
                summed = total[key] = ResourceDemand(shape=dict(demand.shape))
                summed.label_selectors.extend(demand.label_selectors)
            summed.num_ready_requests_queued += demand.num_ready_requests_queued
            summed.num_infeasible_requests_queued += demand.num_infeasible_requests_queued
            summed.backlog_size += demand.backlog_size
    return list(total.values())


def _initial_data(node: GcsNodeInfo) -> ResourcesData:
    """A node's view before its raylet reported: totals from registration, all free."""
    return ResourcesData(
        node_id=node.node_id,
        node_manager_address=node.node_manager_address,
        resources_total=dict(node.resources_total),
        resources_available=dict(node.resources_total),
        labels=dict(node.labels),
    )


# The fields a ResourceViewSyncMessage and a ResourcesData both carry, by the same names.
_VIEW_MAPS = ("resources_total", "resources_available", "labels")
_VIEW_SCALARS = ("object_pulls_queued", "idle_duration_ms", "is_draining",
                "draining_deadline_timestamp_ms")  # fmt: skip


def _copy_view_fields(
    source: ResourceViewSyncMessage | ResourcesData, target: ResourceViewSyncMessage | ResourcesData
) -> None:
    """Copy the fields a view and a node record share from `source` into `target`."""
    for name in _VIEW_MAPS:
        target.ClearField(name)
        getattr(target, name).update(getattr(source, name))
    for name in _VIEW_SCALARS:
        setattr(target, name, getattr(source, name))


def _view_of_report(data: ResourcesData) -> ResourceViewSyncMessage:
    """A GetResourceLoad report as a resource view (the fields both carry)."""
    view = ResourceViewSyncMessage()
    _copy_view_fields(data, view)
    return view


def _inherit(view: ResourceViewSyncMessage, earlier: NodeView) -> None:
    """Give `view` the totals and labels it left out from the node's earlier view."""
    if not view.resources_total:
        view.resources_total.update(earlier.resources_total)
    if not view.labels:
        view.labels.update(earlier.labels)


def _explicit(resources: Mapping[str, float]) -> dict[str, float]:
    return {
        name: value
        for name, value in resources.items()
        if value != 0 and not name.startswith(IMPLICIT_RESOURCE_PREFIX)
    }


M = TypeVar("M", ResourcesData, PlacementGroupLoad)


def _copy(message: M) -> M:
    copied = type(message)()
    copied.CopyFrom(message)
    return copied
