"""The placement group scheduler (Ray's GcsPlacementGroupScheduler): nodes for a group's
unplaced bundles, reserved on the raylets in two phases (`schedule`: prepare,
`persist`, commit); committed bundles indexed by node; `destroy`, `reset`.
Mechanism and decisions: placement_groups/DESIGN.md.

Errors: none of its own. Raylet failures (UnavailableError) are outcomes, not errors;
`persist` may raise (the attempt then ends without cancelling what was prepared: the
stored state decides, and the node is released by the next leader if need be).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gcs_ha.errors import UnavailableError
from gcs_ha.managers.manager import BackgroundTasks
from gcs_ha.managers.placement_groups.bundle_policy import (
    BundleRequest,
    NodeResources,
    Status,
    fixed_map,
    fixed_subset,
    place,
)
from gcs_ha.managers.resource_manager import NodeView
from gcs_ha.proto.ray.common_pb2 import STRICT_SPREAD, Bundle
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo, PlacementGroupTableData
from gcs_ha.proto.ray.ray_syncer_pb2 import ResourceViewSyncMessage

log = logging.getLogger(__name__)

PREPARED = PlacementGroupTableData.PREPARED
CANCEL_RETRIES, CANCEL_INTERVAL_S = 5, 1.0  # Ray's CancelResourceReserve retries
HOLD_S = 5.0
GREET_WAIT_S = 10.0

BundleKey = tuple[bytes, int]  # (placement group id, bundle index)
Persist = Callable[[dict[int, bytes]], Awaitable[bool]]


class BundleRaylets(Protocol):
    """The raylet calls of placement (gcs_ha.server.clients.raylets implements them)."""

    async def prepare_bundle_resources(
        self, node: GcsNodeInfo, bundles: Sequence[Bundle]
    ) -> bool: ...

    async def commit_bundle_resources(
        self, node: GcsNodeInfo, bundles: Sequence[Bundle]
    ) -> None: ...

    async def remove_placement_group_bundles(
        self, node: GcsNodeInfo, placement_group_id: bytes, bundles: Sequence[Bundle]
    ) -> None: ...

    async def release_unused_bundles(
        self, node: GcsNodeInfo, bundles_in_use: Iterable[object]
    ) -> None: ...

    async def wait_bundles_released(self, node_id: bytes, timeout_s: float) -> bool: ...


class ClusterView(Protocol):
    """The resource manager's part the scheduler reads."""

    def alive_nodes(self) -> dict[bytes, GcsNodeInfo]: ...

    def resource_view(self) -> Mapping[bytes, NodeView]: ...

    def add_view_listener(
        self, listener: Callable[[bytes, ResourceViewSyncMessage], None]
    ) -> None: ...


class Result(enum.Enum):
    PLACED = "placed"  # every bundle of the attempt committed
    PARTIAL = "partial"  # some commits failed: `uncommitted` lost their node
    FAILED = "failed"  # no room now, or a prepare failed: retry later
    INFEASIBLE = "infeasible"  # no node can ever take it: wait for a new node
    CANCELLED = "cancelled"  # the group was removed meanwhile


@dataclass
class Attempt:
    """How one attempt ended: bundle index -> node for the bundles it committed."""

    result: Result
    committed: dict[int, bytes] = field(default_factory=dict)
    uncommitted: list[int] = field(default_factory=list)


@dataclass
class _Deduction:
    node_id: bytes
    resources: dict[str, int]
    settled_at: float | None = None


@dataclass
class _Flight:
    """One group's bundles being prepared or committed: index -> (node, bundle)."""

    pg_id: bytes
    bundles: dict[int, tuple[bytes, Bundle]]
    cancelled: bool = False
    active: bool = False  # an attempt runs it (else it waits to be committed again)
    deductions: list[_Deduction] = field(default_factory=list)

    def by_node(self, indexes: Iterable[int] | None = None) -> dict[bytes, list[Bundle]]:
        grouped: dict[bytes, list[Bundle]] = {}
        for index in self.bundles if indexes is None else indexes:
            node_id, bundle = self.bundles[index]
            grouped.setdefault(node_id, []).append(bundle)
        return grouped


def is_placed(node_id: bytes) -> bool:
    """A bundle's node id names a node (Ray's nil id is empty or all 0xff bytes)."""
    return bool(node_id) and node_id != b"\xff" * len(node_id)


def index_of(bundle: Bundle) -> int:
    return int(bundle.bundle_id.bundle_index)


class PlacementGroupScheduler:
    """Chooses nodes and reserves bundles on raylets; see the module docstring."""

    def __init__(
        self,
        view: ClusterView,
        raylets: BundleRaylets,
        *,
        hold_s: float = HOLD_S,
        cancel_retries: int = CANCEL_RETRIES,
        cancel_interval_s: float = CANCEL_INTERVAL_S,
        greet_wait_s: float = GREET_WAIT_S,
    ) -> None:
        self._view = view
        self._raylets = raylets
        self._hold_s = hold_s
        self._cancel_retries = cancel_retries
        self._cancel_interval_s = cancel_interval_s
        self._greet_wait_s = greet_wait_s
        self._committed: dict[bytes, dict[int, tuple[bytes, Bundle]]] = {}
        self._on_node: dict[bytes, set[BundleKey]] = {}
        self._flights: dict[bytes, _Flight] = {}
        self._deductions: dict[bytes, list[_Deduction]] = {}
        self._stale: set[bytes] = set()
        self._unreleased: set[bytes] = set()
        self._running = False
        self._on_change: Callable[[], None] = lambda: None
        self._tasks = BackgroundTasks("placement_group_scheduler")
        view.add_view_listener(self._on_view)

    # -- lifecycle (driven by the placement group manager) -----------------------------

    def set_change_listener(self, listener: Callable[[], None]) -> None:
        """Called when more nodes may take bundles (a release answered, a first view)."""
        self._on_change = listener

    def reset(
        self,
        placed: Iterable[Bundle],
        prepared: Iterable[PlacementGroupTableData],
        alive: Iterable[bytes],
    ) -> None:
        """Start a term: `placed` are the committed bundles (node ids set), `prepared` the
        groups stored PREPARED, `alive` the nodes to release before preparing on them."""
        self._clear()
        for bundle in placed:
            self._index(bytes(bundle.bundle_id.placement_group_id), bundle.node_id, bundle)
        for pg in prepared:
            bundles = {
                index_of(b): (bytes(b.node_id), b) for b in pg.bundles if is_placed(b.node_id)
            }
            flight = _Flight(bytes(pg.placement_group_id), bundles)
            self._flights[flight.pg_id] = flight
        self._stale = {bytes(n) for n in alive}
        self._unreleased = set(self._stale)
        self._running = True
        for node_id in self._unreleased:
            self._tasks.spawn(self._release(node_id), f"release:{node_id.hex()[:12]}")

    async def stop(self) -> None:
        """Cancel releases, cancellations and attempts in flight; forget everything."""
        self._running = False
        await self._tasks.cancel_all()
        self._clear()

    def _clear(self) -> None:
        for table in (self._committed, self._on_node, self._flights, self._deductions):
            table.clear()
        self._stale.clear()
        self._unreleased.clear()

    # -- reads -------------------------------------------------------------------------

    def bundles_in_use(self, node_id: bytes) -> list[Bundle]:
        """The bundles a raylet must keep (committed or in flight), for ReleaseUnused-
        Bundles (the node manager sends it when it greets the node after a failover)."""
        node_id = bytes(node_id)
        in_use = [self._committed[pg][i][1] for pg, i in sorted(self._on_node.get(node_id, ()))]
        for flight in self._flights.values():
            for index, (where, bundle) in sorted(flight.bundles.items()):
                if where == node_id and (flight.pg_id, index) not in self._on_node.get(node_id, ()):
                    placed = Bundle()
                    placed.CopyFrom(bundle)
                    placed.node_id = node_id
                    in_use.append(placed)
        return in_use

    def bundles_on_node(self, node_id: bytes) -> dict[bytes, list[int]]:
        """Placement group id -> indexes of its committed bundles on the node."""
        found: dict[bytes, list[int]] = {}
        for pg_id, index in sorted(self._on_node.get(bytes(node_id), ())):
            found.setdefault(pg_id, []).append(index)
        return found

    def is_ready(self, node_id: bytes) -> bool:
        """Whether the node may be chosen (released and reported after a failover)."""
        node_id = bytes(node_id)
        return node_id not in self._stale and node_id not in self._unreleased

    # -- node events -------------------------------------------------------------------

    def remove_node(self, node_id: bytes) -> dict[bytes, list[int]]:
        """A node died: forget its bundles and reservations; return what it held."""
        node_id = bytes(node_id)
        held = self.bundles_on_node(node_id)
        for pg_id, index in self._on_node.pop(node_id, set()):
            bundles = self._committed.get(pg_id, {})
            bundles.pop(index, None)
            if not bundles:
                self._committed.pop(pg_id, None)
        self._deductions.pop(node_id, None)
        self._stale.discard(node_id)
        self._unreleased.discard(node_id)
        return held

    def destroy(self, pg_id: bytes) -> None:
        """Cancel every bundle of the group, committed or in flight (background)."""
        pg_id = bytes(pg_id)
        bundles = self._committed.pop(pg_id, {})
        for index, (node_id, _) in bundles.items():
            self._on_node.get(node_id, set()).discard((pg_id, index))
        grouped: dict[bytes, list[Bundle]] = {}
        for node_id, bundle in bundles.values():
            grouped.setdefault(node_id, []).append(bundle)
        flight = self._flights.get(pg_id)
        if flight is not None:
            flight.cancelled = True
            for node_id, more in flight.by_node().items():
                grouped.setdefault(node_id, []).extend(more)
            if not flight.active:
                del self._flights[pg_id]
        for node_id, node_bundles in grouped.items():
            self._cancel_later(node_id, pg_id, node_bundles)

    # -- one attempt -------------------------------------------------------------------

    async def schedule(self, pg: PlacementGroupTableData, persist: Persist) -> Attempt:
        """One attempt to place the group's unplaced bundles (placement_groups/DESIGN.md).
        A PREPARED group is committed again as stored."""
        pg_id = bytes(pg.placement_group_id)
        if pg.state == PREPARED:
            placed = {
                index_of(b): (bytes(b.node_id), b) for b in pg.bundles if is_placed(b.node_id)
            }
            flight = self._flights.setdefault(pg_id, _Flight(pg_id, placed))
            return await self._run(flight, self._commit(flight))
        unplaced = [b for b in pg.bundles if not is_placed(b.node_id)]
        if not unplaced:
            return Attempt(Result.PLACED)
        requests = [BundleRequest.of(b) for b in unplaced]
        nodes, blocked = self._candidates({name for r in requests for name in r.resources})
        avoid = (
            {bytes(b.node_id) for b in pg.bundles if is_placed(b.node_id)}
            if pg.strategy == STRICT_SPREAD
            else set()
        )
        soft = bytes(pg.soft_target_node_id) if is_placed(pg.soft_target_node_id) else None
        placement = place(pg.strategy, requests, nodes, soft_target=soft, avoid=avoid)
        if placement.status is Status.INFEASIBLE:
            return Attempt(Result.FAILED if blocked else Result.INFEASIBLE)
        if placement.status is Status.FAILED:
            return Attempt(Result.FAILED)
        chosen = {index_of(b): (node, b) for b, node in zip(unplaced, placement.nodes, strict=True)}
        flight = _Flight(pg_id, chosen)
        self._flights[pg_id] = flight
        for node_id, bundle in chosen.values():
            flight.deductions.append(self._deduct(node_id, bundle))
        return await self._run(flight, self._prepare_then_commit(flight, persist))

    async def _run(self, flight: _Flight, work: Awaitable[Attempt]) -> Attempt:
        flight.active = True
        try:
            return await work
        finally:
            flight.active = False
            now = time.monotonic()
            for deduction in flight.deductions:
                deduction.settled_at = now
            if self._flights.get(flight.pg_id) is flight:
                del self._flights[flight.pg_id]

    async def _prepare_then_commit(self, flight: _Flight, persist: Persist) -> Attempt:
        grouped = flight.by_node()
        nodes = list(grouped)
        results = await asyncio.gather(*(self._prepare(n, grouped[n]) for n in nodes))
        prepared = [node_id for node_id, ok in zip(nodes, results, strict=True) if ok]
        for node_id, ok in zip(nodes, results, strict=True):
            if not ok:  # the raylet reserved nothing: its view is right as it is
                self._drop_deductions(flight, node_id)
        if len(prepared) < len(nodes) or flight.cancelled:
            for node_id in prepared:
                self._cancel_later(node_id, flight.pg_id, grouped[node_id])
            return Attempt(Result.CANCELLED if flight.cancelled else Result.FAILED)
        locations = {index: node_id for index, (node_id, _) in flight.bundles.items()}
        if not await persist(locations) or flight.cancelled:
            for node_id in prepared:
                self._cancel_later(node_id, flight.pg_id, grouped[node_id])
            return Attempt(Result.CANCELLED)
        return await self._commit(flight)

    async def _commit(self, flight: _Flight) -> Attempt:
        grouped = flight.by_node()
        nodes = list(grouped)
        results = await asyncio.gather(*(self._commit_on(n, grouped[n]) for n in nodes))
        attempt = Attempt(Result.PLACED)
        alive = self._view.alive_nodes()
        for index, (node_id, bundle) in sorted(flight.bundles.items()):
            if results[nodes.index(node_id)] and node_id in alive:
                attempt.committed[index] = node_id
                self._index(flight.pg_id, node_id, bundle)
            else:
                attempt.uncommitted.append(index)
        for node_id, ok in zip(nodes, results, strict=True):
            if not ok and node_id in alive:  # do not leave a prepared bundle behind
                self._cancel_later(node_id, flight.pg_id, grouped[node_id])
        if flight.cancelled:  # removed meanwhile: cancel all again, the new ones too
            self.destroy(flight.pg_id)
            return Attempt(Result.CANCELLED)
        if attempt.uncommitted:
            attempt.result = Result.PARTIAL
        return attempt

    async def _prepare(self, node_id: bytes, bundles: Sequence[Bundle]) -> bool:
        node = self._view.alive_nodes().get(node_id)
        if node is None:
            return False
        try:
            return await self._raylets.prepare_bundle_resources(node, bundles)
        except UnavailableError as exc:
            log.info("prepare on node %s failed: %s", node_id.hex()[:12], exc)
            return False

    async def _commit_on(self, node_id: bytes, bundles: Sequence[Bundle]) -> bool:
        node = self._view.alive_nodes().get(node_id)
        if node is None:
            return False
        try:
            await self._raylets.commit_bundle_resources(node, bundles)
        except UnavailableError as exc:
            log.info("commit on node %s failed: %s", node_id.hex()[:12], exc)
            return False
        return True

    # -- the view, less our reservations -----------------------------------------------

    def _candidates(self, names: Collection[str]) -> tuple[dict[bytes, NodeResources], bool]:
        """Nodes that may take bundles now, with their amounts of the resources `names`
        only, and whether some ALIVE node was left out because it is not ready yet (then
        nothing is infeasible, only not yet).

        Only the requested resources: a node's view also holds a few resources per
        placement group on it (CPU_group_<id>, bundle_group_<id>, ...), so converting
        all of them made every attempt cost O(groups) (35% of the leader's loop time
        while 1,500 groups were created)."""
        alive = self._view.alive_nodes()
        now = time.monotonic()
        nodes: dict[bytes, NodeResources] = {}
        blocked = False
        for node_id, data in self._view.resource_view().items():
            if node_id not in alive or data.is_draining:
                continue
            if not self.is_ready(node_id):
                blocked = True
                continue
            available = fixed_subset(data.resources_available, names)
            for deduction in self._live_deductions(node_id, now):
                for name, amount in deduction.resources.items():
                    if name in names:
                        available[name] = available.get(name, 0) - amount
            total = fixed_subset(data.resources_total, names)
            nodes[node_id] = NodeResources(available, total, dict(data.labels))
        return nodes, blocked

    def _deduct(self, node_id: bytes, bundle: Bundle) -> _Deduction:
        deduction = _Deduction(node_id, fixed_map(bundle.unit_resources))
        self._deductions.setdefault(node_id, []).append(deduction)
        return deduction

    def _live_deductions(self, node_id: bytes, now: float) -> list[_Deduction]:
        kept = [
            d
            for d in self._deductions.get(node_id, [])
            if d.settled_at is None or now - d.settled_at < self._hold_s
        ]
        self._deductions[node_id] = kept
        return kept

    def _drop_deductions(self, flight: _Flight, node_id: bytes) -> None:
        mine = [d for d in flight.deductions if d.node_id == node_id]
        flight.deductions = [d for d in flight.deductions if d.node_id != node_id]
        left = self._deductions.get(node_id, [])
        self._deductions[node_id] = [d for d in left if all(d is not m for m in mine)]

    def _on_view(self, node_id: bytes, view: ResourceViewSyncMessage) -> None:
        """A raylet reported: its view now shows what settled before; a node known at
        start has a real view at last."""
        if not self._running:
            return
        node_id = bytes(node_id)
        pending = self._deductions.get(node_id)
        if pending:
            self._deductions[node_id] = [d for d in pending if d.settled_at is None]
        if node_id in self._stale:
            self._stale.discard(node_id)
            self._on_change()

    # -- bookkeeping, cancellation, release ----------------------------------------------

    def _index(self, pg_id: bytes, node_id: bytes, bundle: Bundle) -> None:
        node_id = bytes(node_id)
        placed = Bundle()
        placed.CopyFrom(bundle)
        placed.node_id = node_id
        self._committed.setdefault(pg_id, {})[index_of(bundle)] = (node_id, placed)
        self._on_node.setdefault(node_id, set()).add((pg_id, index_of(bundle)))

    def _cancel_later(self, node_id: bytes, pg_id: bytes, bundles: Sequence[Bundle]) -> None:
        if self._running:
            self._tasks.spawn(self._cancel(node_id, pg_id, list(bundles)), "cancel-bundles")

    async def _cancel(self, node_id: bytes, pg_id: bytes, bundles: list[Bundle]) -> None:
        """RemovePlacementGroupBundles, retried; a dead node needs none."""
        for attempt in range(self._cancel_retries):
            node = self._view.alive_nodes().get(node_id)
            if node is None:
                return
            try:
                await self._raylets.remove_placement_group_bundles(node, pg_id, bundles)
                return
            except UnavailableError as exc:
                log.warning("cancelling bundles of %s (try %d): %s", pg_id.hex(), attempt + 1, exc)
            await asyncio.sleep(self._cancel_interval_s)
        log.error("gave up cancelling bundles of %s on node %s", pg_id.hex(), node_id.hex())

    async def _release(self, node_id: bytes) -> None:
        """Open the node to new reservations once its ReleaseUnusedBundles of this term
        ended; send one if nobody did within `greet_wait_s`."""
        if not await self._raylets.wait_bundles_released(node_id, self._greet_wait_s):
            node = self._view.alive_nodes().get(node_id)
            if node is not None:
                log.info("node %s not greeted; releasing its bundles", node_id.hex()[:12])
                try:
                    await self._raylets.release_unused_bundles(node, self.bundles_in_use(node_id))
                except UnavailableError as exc:
                    log.warning("ReleaseUnusedBundles to %s: %s", node_id.hex()[:12], exc)
        self._unreleased.discard(node_id)
        self._on_change()
