"""The resource manager (Ray's GcsResourceManager): the GCS's view of cluster resources.

What it keeps, for every ALIVE node (from the node table at `start`, then the node
manager's `on_node_added` / `on_node_dead` hooks):

  - the node's resource view, one `ResourcesData`: totals, availability, labels and
    drain state from the raylet's RESOURCE_VIEW syncer messages (`consume_sync_message`,
    called by the syncer hub), plus the queued demand (`resource_load`,
    `resource_load_by_shape`) from the periodic `GetResourceLoad` pull. It answers
    NodeResourceInfoGcsService (GetAllAvailableResources, GetAllTotalResources,
    GetAllResourceUsage, GetDrainingNodes) and is what placement-group scheduling reads;
  - the last pulled `GetResourceLoad` reply as a whole, with the time it arrived: the
    autoscaler state manager builds GetClusterResourceState from it, so usage and demand
    in one node state come from the same report (as in Ray, whose autoscaler keeps this
    copy apart from the syncer-fed one);
  - the nodes' latest `node_activity` strings (for the autoscaler's node states).

Until a node's first view arrives (just registered, or every node right after a
failover: raylets reconnect within about 2 s) its totals come from its GcsNodeInfo and
its availability is taken to equal its totals, as Ray's autoscaler state does.

The pull (`gcs_pull_resource_loads_period_milliseconds` = 1000): every `pull_period_s`
each ALIVE node's raylet gets one `GetResourceLoad`, all concurrently, a node whose
previous pull is still in flight skipped; a failed pull is logged once per failure
streak and changes nothing. `pull_resource_loads` runs one round and waits for it.

The placement group manager reports its pending groups with
`update_placement_group_load`; GetAllResourceUsage carries them. Dead nodes are kept
(newest `max_dead_nodes`) for the autoscaler's DEAD node states.

Errors: none of its own; the raylet pool's UnavailableError is caught and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError

from gcs_ha.errors import GcsHaError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
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


class ResourceLoadSource(Protocol):
    """The part of the RayletClientPool port the pull uses."""

    async def get_resource_load(self, node: GcsNodeInfo) -> object: ...


@dataclass
class PulledUsage:
    """A node's last GetResourceLoad report and when it arrived (time.monotonic())."""

    data: ResourcesData
    at: float


class GcsResourceManager:
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
        for table in (self._alive, self._dead, self._views, self._pulled, self._activity):
            table.clear()
        self._in_flight.clear()
        self._failing.clear()
        self._pg_load = None

    # -- hooks: node manager, syncer hub, placement groups, autoscaler -----------------

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
        for table in (self._views, self._pulled, self._activity):
            table.pop(node_id, None)
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
        """Apply a raylet's resource view; False for a node that is not ALIVE here."""
        data = self._views.get(node_id)
        if data is None:
            return False
        if view.resources_total:
            data.ClearField("resources_total")
            data.resources_total.update(view.resources_total)
        data.ClearField("resources_available")
        data.resources_available.update(view.resources_available)
        if view.labels:
            data.ClearField("labels")
            data.labels.update(view.labels)
        data.object_pulls_queued = view.object_pulls_queued
        data.idle_duration_ms = view.idle_duration_ms
        data.is_draining = view.is_draining
        data.draining_deadline_timestamp_ms = view.draining_deadline_timestamp_ms
        self._activity[node_id] = list(view.node_activity)
        for listener in list(self._listeners):
            try:
                listener(node_id, view)
            except Exception:
                log.exception("resource view listener failed for %s", node_id.hex())
        return True

    def update_resource_loads(self, data: ResourcesData) -> bool:
        """Apply one GetResourceLoad report: the node's demand goes into its view, the
        whole report becomes its pulled usage. False for a node that is not ALIVE."""
        node_id = bytes(data.node_id)
        view = self._views.get(node_id)
        if view is None:
            return False
        view.ClearField("resource_load")
        view.resource_load.update(data.resource_load)
        view.resource_load_by_shape.CopyFrom(data.resource_load_by_shape)
        self._pulled[node_id] = PulledUsage(_copy(data), time.monotonic())
        return True

    def update_placement_group_load(self, load: PlacementGroupLoad | None) -> None:
        """The placement groups waiting for resources (from the placement group manager)."""
        self._pg_load = None if load is None else _copy(load)

    def set_node_draining(self, node_id: bytes, deadline_timestamp_ms: int) -> None:
        """Mark a node draining at once (its raylet accepted a drain); its next view and
        report say the same."""
        for data in (self._views.get(node_id), self._pulled_data(node_id)):
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

    def resource_view(self) -> dict[bytes, ResourcesData]:
        """Every ALIVE node's current view (the messages themselves: do not modify)."""
        return dict(self._views)

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
            for nid, d in self._views.items()
        ]

    def total_resources(self) -> list[TotalResources]:
        """GetAllTotalResources: per node, its resource capacities."""
        return [
            TotalResources(node_id=nid, resources_total=_explicit(d.resources_total))
            for nid, d in self._views.items()
        ]

    def draining_nodes(self) -> list[gs.DrainingNode]:
        """GetDrainingNodes: the nodes whose view says they are draining."""
        return [
            gs.DrainingNode(
                node_id=nid, draining_deadline_timestamp_ms=d.draining_deadline_timestamp_ms
            )
            for nid, d in self._views.items()
            if d.is_draining
        ]

    def resource_usage(self) -> ResourceUsageBatchData:
        """GetAllResourceUsage: every node's view, the demand summed by shape, and the
        placement groups waiting for resources."""
        batch = ResourceUsageBatchData()
        if not self._views:
            return batch
        batch.batch.extend(self._views.values())
        batch.resource_load_by_shape.resource_demands.extend(aggregate_demand(self._views.values()))
        if self._pg_load is not None:
            batch.placement_group_load.CopyFrom(self._pg_load)
        return batch

    # -- internals ---------------------------------------------------------------------

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
