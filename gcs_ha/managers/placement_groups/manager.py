"""The placement group manager (Ray's GcsPlacementGroupManager): the placement group
table, the queue of groups waiting for nodes (`pending_queue`), and the group lifecycle
(each state stored before it is acted on); `start` is Ray's GCS restart path. States,
failover, replays: placement_groups/DESIGN.md.

Errors: InvalidRequestError (a placement group id that is not 18 bytes), NameTakenError
(an InvalidStateError: a live group has the name in the namespace; Ray's Invalid), NotFoundError
(WaitPlacementGroupUntilReady of a removed group), UnavailableError (waiters when the
manager stops: the client waits again on the next leader); the store's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gcs_ha.errors import (
    GcsHaError,
    InvalidRequestError,
    InvalidStateError,
    NotFoundError,
    NotLeaderError,
    UnavailableError,
    UnknownOutcomeError,
)
from gcs_ha.futures import settle_all
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.placement_groups.pending_queue import PendingQueue
from gcs_ha.managers.placement_groups.scheduler import (
    Attempt,
    PlacementGroupScheduler,
    Result,
    index_of,
    is_placed,
)
from gcs_ha.proto.ray.common_pb2 import Bundle, PlacementGroupSpec
from gcs_ha.proto.ray.gcs_pb2 import (
    GcsNodeInfo,
    JobTableData,
    PlacementGroupLoad,
    PlacementGroupStats,
    PlacementGroupTableData,
)
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

PG_ID_BYTES = 18  # Ray's PlacementGroupID
PENDING, PREPARED, CREATED = (
    PlacementGroupTableData.PENDING,
    PlacementGroupTableData.PREPARED,
    PlacementGroupTableData.CREATED,
)
REMOVED, RESCHEDULING = PlacementGroupTableData.REMOVED, PlacementGroupTableData.RESCHEDULING
TICK_S = 1.0
MAX_ATTEMPTS = 8  # placement groups scheduled at once
BUSY_RETRY_S = 0.05  # a group due again while its attempt runs is looked at again after
MAX_LOAD_REPORT = 1000  # max_placement_group_load_report_size
WRITE_RETRY_MAX_S = 1.0
_RETRYABLE = (UnknownOutcomeError, UnavailableError, NotLeaderError)


class NameTakenError(InvalidStateError):
    """A live placement group already has this name in the namespace (Ray's GCS answers
    Invalid for it, not AlreadyExists)."""


class LoadSink(Protocol):
    """Where pending groups are reported (the resource manager)."""

    def update_placement_group_load(self, load: PlacementGroupLoad | None) -> None: ...


class PlacementGroupManager:
    """Placement groups: the table, the queue, the lifecycle (a Manager)."""

    def __init__(
        self,
        tables: GcsTableStorage,
        scheduler: PlacementGroupScheduler,
        load_sink: LoadSink | None = None,
        *,
        namespace_of: Callable[[bytes], str] = lambda job_id: "",
        tick_s: float = TICK_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._tables = tables
        self._scheduler = scheduler
        self._load_sink = load_sink
        self._namespace_of = namespace_of
        self._tick_s = tick_s
        self._max_attempts = max_attempts
        self._attempting: set[bytes] = set()
        self._groups: dict[bytes, PlacementGroupTableData] = {}
        self._named: dict[tuple[str, str], bytes] = {}
        self._queue = PendingQueue()
        self._infeasible: dict[bytes, None] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._tasks = BackgroundTasks("placement_group")
        scheduler.set_change_listener(self._queue.wake)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "placement_group"

    async def start(self, init: GcsInitData) -> None:
        """Rebuild from the table (see the module docstring) and start scheduling."""
        self._clear()
        alive = {bytes(i) for i, n in init.nodes.items() if n.state == GcsNodeInfo.ALIVE}
        placed: list[Bundle] = []
        prepared: list[PlacementGroupTableData] = []
        fixups, doomed = [], []
        for raw_id, stored in init.placement_groups.items():
            pg_id, record = bytes(raw_id), _copy(stored)
            self._groups[pg_id] = record
            if record.state == REMOVED:
                continue
            if record.name:
                self._named[(record.ray_namespace, record.name)] = pg_id
            if _forget_nodes(record, lambda node: node not in alive):
                fixups.append(pg_id)
            if record.state == PREPARED:
                prepared.append(record)
                self._queue.push(pg_id, front=True)
            elif record.state in (CREATED, RESCHEDULING):
                placed.extend(b for b in record.bundles if is_placed(b.node_id))
            if record.state in (PENDING, RESCHEDULING):
                self._queue.push(pg_id)
            job = init.jobs.get(bytes(record.creator_job_id))
            if job is None or job.is_dead:
                record.creator_job_dead = True
                if _lifetime_done(record):
                    doomed.append(pg_id)
        self._scheduler.reset(placed, prepared, alive)
        self._tasks.spawn(self._run_queue(), "schedule")
        self._tasks.spawn(self._tick(), "tick")
        if fixups or doomed:
            self._tasks.spawn(self._after_start(fixups, doomed), "after-start")

    async def stop(self) -> None:
        """Stop scheduling (attempts in flight are cancelled); waiters get UNAVAILABLE."""
        await self._tasks.cancel_all()
        await self._scheduler.stop()
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(UnavailableError("placement group manager stopped"))
        self._clear()

    def _clear(self) -> None:
        self._attempting.clear()
        self._groups.clear()
        self._named.clear()
        self._queue.clear()
        self._infeasible.clear()
        self._waiters.clear()
        self._locks.clear()

    # -- hooks for other managers ------------------------------------------------------

    def bundles_in_use(self, node_id: bytes) -> list[Bundle]:
        """The node manager's ReleaseUnusedBundles list for a node."""
        return self._scheduler.bundles_in_use(node_id)

    def placement_groups_on_node(self, node_id: bytes) -> list[bytes]:
        """Ids of the groups with committed bundles on the node (autoscaler labels)."""
        return list(self._scheduler.bundles_on_node(node_id))

    def on_node_added(self, node: GcsNodeInfo) -> None:
        """A new node: infeasible groups may fit now."""
        for pg_id in self._infeasible:
            self._queue.push(pg_id)
        self._infeasible.clear()
        self._queue.wake()

    async def on_node_removed(self, node: GcsNodeInfo) -> None:
        """A node died: its bundles lose their node; CREATED groups are rescheduled
        first. Groups mid-attempt finish their attempt and reschedule after it."""
        node_id = bytes(node.node_id)
        held = self._scheduler.remove_node(node_id)
        await asyncio.gather(*(self._lose_node(pg_id, node_id) for pg_id in held))

    def on_job_finished(self, job: JobTableData) -> None:
        """The creator job ended: remove its groups that are not detached (background)."""
        self._tasks.spawn(self._creator_gone(bytes(job.job_id), by_job=True), "job-finished")

    def on_actor_dead(self, actor_id: bytes) -> None:
        """The creator actor died for good: remove its groups that are not detached."""
        self._tasks.spawn(self._creator_gone(bytes(actor_id), by_job=False), "actor-dead")

    # -- requests ----------------------------------------------------------------------

    async def create_placement_group(self, spec: PlacementGroupSpec) -> None:
        """CreatePlacementGroup: store it PENDING and queue it; a known id is a replay."""
        pg_id = _check_id(spec.placement_group_id)
        async with self._lock(pg_id):
            if pg_id in self._groups:
                log.info("placement group %s is already registered", pg_id.hex())
                return
            record = _record_of(spec, self._namespace_of(bytes(spec.creator_job_id)))
            key = (record.ray_namespace, record.name)
            if record.name:
                if key in self._named:
                    raise NameTakenError(
                        f"Failed to create placement group '{pg_id.hex()}' because name "
                        f"'{record.name}' already exists."
                    )
                self._named[key] = pg_id  # reserved while the write is in flight
            try:
                await self._tables.placement_group_table.put(pg_id, record)
            except BaseException:
                if record.name:
                    self._named.pop(key, None)
                raise
            self._groups[pg_id] = record
            log.info("placement group %s (%s) registered", pg_id.hex(), record.name)
            self._queue.push(pg_id)

    async def remove_placement_group(self, pg_id: bytes) -> None:
        """RemovePlacementGroup: store it REMOVED, cancel its bundles, fail its waiters."""
        pg_id = _check_id(pg_id)
        async with self._lock(pg_id):
            current = self._groups.get(pg_id)
            if current is None or current.state == REMOVED:
                return
            removed = _copy(current)
            removed.state = REMOVED
            removed.stats.scheduling_state = PlacementGroupStats.REMOVED
            await self._tables.placement_group_table.put(pg_id, removed)
            self._groups[pg_id] = removed
            if self._named.get((removed.ray_namespace, removed.name)) == pg_id:
                del self._named[(removed.ray_namespace, removed.name)]
            self._queue.discard(pg_id)
            self._infeasible.pop(pg_id, None)
            self._scheduler.destroy(pg_id)
            log.info("placement group %s removed", pg_id.hex())
        self._resolve(pg_id, NotFoundError("Placement group is removed before it is created."))

    def get_placement_group(self, pg_id: bytes) -> PlacementGroupTableData | None:
        record = self._groups.get(bytes(pg_id))
        return None if record is None else _copy(record)

    def get_named_placement_group(
        self, name: str, namespace: str
    ) -> PlacementGroupTableData | None:
        pg_id = self._named.get((namespace, name))
        return None if pg_id is None else self.get_placement_group(pg_id)

    def get_all_placement_groups(
        self, limit: int | None
    ) -> tuple[list[PlacementGroupTableData], int]:
        """Every group (removed ones too), at most `limit` (None or -1: no limit, as in
        Ray); and how many there are."""
        records = list(self._groups.values())
        if limit is not None and limit != -1:
            records = records[: max(limit, 0)]
        return [_copy(r) for r in records], len(self._groups)

    async def wait_until_ready(self, pg_id: bytes) -> None:
        """Return once the group is CREATED (at once if it is); NotFoundError if it is or
        gets removed. An unknown id waits: its CreatePlacementGroup may come later."""
        pg_id = bytes(pg_id)
        record = self._groups.get(pg_id)
        if record is not None and record.state == CREATED:
            return
        if record is not None and record.state == REMOVED:
            raise NotFoundError("Placement group is removed.")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(pg_id, [])
        waiters.append(future)
        try:
            await future
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters and self._waiters.get(pg_id) is waiters:
                del self._waiters[pg_id]

    def placement_group_load(self) -> PlacementGroupLoad:
        """The groups waiting for nodes, queue order first, then the infeasible ones."""
        load = PlacementGroupLoad()
        for pg_id in [*self._queue.ids(), *self._infeasible]:
            record = self._groups.get(pg_id)
            if record is not None and record.state in (PENDING, RESCHEDULING):
                load.placement_group_data.append(record)
                if len(load.placement_group_data) >= MAX_LOAD_REPORT:
                    break
        return load

    # -- the scheduling loop -----------------------------------------------------------

    async def _run_queue(self) -> None:
        slots = asyncio.Semaphore(self._max_attempts)
        while True:
            await slots.acquire()
            try:
                pg_id = await self._queue.next()
            except BaseException:
                slots.release()
                raise
            if pg_id in self._attempting:  # due again while its attempt runs
                slots.release()
                self._queue.push(pg_id, delay_s=BUSY_RETRY_S)
                continue
            self._attempting.add(pg_id)
            self._tasks.spawn(self._attempt_in_slot(pg_id, slots), "attempt")

    async def _attempt_in_slot(self, pg_id: bytes, slots: asyncio.Semaphore) -> None:
        try:
            await self._attempt(pg_id)
        except Exception:
            log.exception("scheduling placement group %s failed", pg_id.hex())
            self._queue.backoff(pg_id)
        finally:
            self._attempting.discard(pg_id)
            slots.release()

    async def _attempt(self, pg_id: bytes) -> None:
        record = self._groups.get(pg_id)
        if record is None or record.state in (REMOVED, CREATED):
            return
        record.stats.scheduling_attempt += 1
        record.stats.scheduling_started_time_ns = time.time_ns()

        async def persist(locations: dict[int, bytes]) -> bool:
            return await self._persist_prepared(pg_id, locations)

        attempt = await self._scheduler.schedule(_copy(record), persist)
        await self._settle(pg_id, attempt)

    async def _persist_prepared(self, pg_id: bytes, locations: dict[int, bytes]) -> bool:
        """Store the group PREPARED with its bundles' nodes; False if it was removed."""
        async with self._lock(pg_id):
            current = self._groups.get(pg_id)
            if current is None or current.state == REMOVED:
                return False
            record = _copy(current)
            for index, node_id in locations.items():
                _bundle(record, index).node_id = node_id
            record.state = PREPARED
            await self._write(record)
            self._groups[pg_id] = record
            return True

    async def _settle(self, pg_id: bytes, attempt: Attempt) -> None:
        """Act on an attempt's outcome (see the module docstring)."""
        if attempt.result is Result.CANCELLED:
            return
        record = self._groups.get(pg_id)
        if record is None or record.state == REMOVED:
            return
        if attempt.result is Result.INFEASIBLE:
            record.stats.scheduling_state = PlacementGroupStats.INFEASIBLE
            self._infeasible[pg_id] = None
            return
        if attempt.result is Result.FAILED:
            record.stats.scheduling_state = (
                PlacementGroupStats.NO_RESOURCES
                if record.state == PENDING
                else PlacementGroupStats.FAILED_TO_COMMIT_RESOURCES
            )
            self._queue.backoff(pg_id)
            return
        async with self._lock(pg_id):
            current = self._groups.get(pg_id)
            if current is None or current.state == REMOVED:
                return
            record = _copy(current)
            for index in attempt.uncommitted:
                _bundle(record, index).ClearField("node_id")
            for index, node_id in attempt.committed.items():
                _bundle(record, index).node_id = node_id
            _mark_done(record)
            await self._write(record)
            self._groups[pg_id] = record
        if record.state == CREATED:
            log.info("placement group %s created", pg_id.hex())
            self._queue.forget(pg_id)
            self._resolve(pg_id, None)
        elif attempt.result is Result.PARTIAL:
            self._queue.backoff(pg_id)
        else:  # placed, but a node died meanwhile
            self._queue.push(pg_id, front=True)

    async def _tick(self) -> None:
        while True:
            if self._load_sink is not None:
                self._load_sink.update_placement_group_load(self.placement_group_load())
            self._queue.wake()
            await asyncio.sleep(self._tick_s)

    # -- internals ---------------------------------------------------------------------

    async def _lose_node(self, pg_id: bytes, node_id: bytes) -> None:
        async with self._lock(pg_id):
            current = self._groups.get(pg_id)
            if current is None or current.state == REMOVED:
                return
            record = _copy(current)
            if not _forget_nodes(record, lambda node: node == node_id):
                return
            await self._write(record)
            self._groups[pg_id] = record
        log.info("placement group %s lost bundles on node %s", pg_id.hex(), node_id.hex())
        if record.state == RESCHEDULING and pg_id not in self._queue:
            self._queue.push(pg_id, front=True)

    async def _creator_gone(self, creator_id: bytes, *, by_job: bool) -> None:
        for pg_id, record in list(self._groups.items()):
            creator = record.creator_job_id if by_job else record.creator_actor_id
            if record.state == REMOVED or bytes(creator) != creator_id:
                continue
            if by_job:
                record.creator_job_dead = True
            else:
                record.creator_actor_dead = True
            if _lifetime_done(record):
                await self.remove_placement_group(pg_id)

    async def _after_start(self, fixups: list[bytes], doomed: list[bytes]) -> None:
        """Store what `start` changed in memory; remove groups whose creator is gone."""
        for pg_id in doomed:
            await self.remove_placement_group(pg_id)
        for pg_id in fixups:
            async with self._lock(pg_id):
                record = self._groups.get(pg_id)
                if record is not None and record.state != REMOVED:
                    await self._write(record)

    async def _write(self, record: PlacementGroupTableData) -> None:
        """Put the record, retrying what may succeed later, until this manager stops."""
        delay = 0.05
        while True:
            try:
                await self._tables.placement_group_table.put(
                    bytes(record.placement_group_id), record
                )
                return
            except _RETRYABLE as exc:
                log.warning("placement group write failed, retrying: %s", exc)
            await asyncio.sleep(delay)
            delay = min(WRITE_RETRY_MAX_S, delay * 2)

    def _resolve(self, pg_id: bytes, error: GcsHaError | None) -> None:
        settle_all(self._waiters.pop(pg_id, []), error)

    def _lock(self, pg_id: bytes) -> asyncio.Lock:
        return self._locks.setdefault(pg_id, asyncio.Lock())


def _record_of(spec: PlacementGroupSpec, namespace: str) -> PlacementGroupTableData:
    """A new group's record, PENDING (as Ray's GcsPlacementGroup constructor makes it)."""
    record = PlacementGroupTableData(
        placement_group_id=spec.placement_group_id,
        name=spec.name,
        strategy=spec.strategy,
        state=PENDING,
        creator_job_id=spec.creator_job_id,
        creator_actor_id=spec.creator_actor_id,
        creator_job_dead=spec.creator_job_dead,
        creator_actor_dead=spec.creator_actor_dead,
        is_detached=spec.is_detached,
        ray_namespace=namespace,
        soft_target_node_id=spec.soft_target_node_id,
        placement_group_creation_timestamp_ms=int(time.time() * 1000),
    )
    record.bundles.extend(spec.bundles)
    record.stats.creation_request_received_ns = time.time_ns()
    record.stats.scheduling_state = PlacementGroupStats.QUEUED
    return record


def _mark_done(record: PlacementGroupTableData) -> None:
    """CREATED when every bundle has a node, else RESCHEDULING."""
    stats = record.stats
    if any(not is_placed(b.node_id) for b in record.bundles):
        record.state = RESCHEDULING
        stats.scheduling_state = PlacementGroupStats.QUEUED
        return
    record.state = CREATED
    now_ns = time.time_ns()
    record.placement_group_final_bundle_placement_timestamp_ms = now_ns // 1_000_000
    stats.scheduling_state = PlacementGroupStats.FINISHED
    if stats.scheduling_started_time_ns:
        stats.scheduling_latency_us = (now_ns - stats.scheduling_started_time_ns) // 1000
    if stats.creation_request_received_ns:
        stats.end_to_end_creation_latency_us = (now_ns - stats.creation_request_received_ns) // 1000


def _forget_nodes(record: PlacementGroupTableData, gone: Callable[[bytes], bool]) -> bool:
    """Clear the node of every bundle placed on a node `gone` says is gone; a CREATED
    group becomes RESCHEDULING. True when something changed."""
    changed = False
    for bundle in record.bundles:
        if is_placed(bundle.node_id) and gone(bytes(bundle.node_id)):
            bundle.ClearField("node_id")
            changed = True
    if changed and record.state == CREATED:
        record.state = RESCHEDULING
        record.stats.scheduling_state = PlacementGroupStats.QUEUED
    return changed


def _bundle(record: PlacementGroupTableData, index: int) -> Bundle:
    """The record's bundle with that bundle index."""
    if index < len(record.bundles) and index_of(record.bundles[index]) == index:
        return record.bundles[index]
    for bundle in record.bundles:
        if index_of(bundle) == index:
            return bundle
    raise InvalidRequestError(f"placement group has no bundle {index}")


def _lifetime_done(record: PlacementGroupTableData) -> bool:
    return not record.is_detached and record.creator_job_dead and record.creator_actor_dead


def _check_id(pg_id: bytes) -> bytes:
    if len(pg_id) != PG_ID_BYTES:
        raise InvalidRequestError(f"a placement group id has {PG_ID_BYTES} bytes, not {len(pg_id)}")
    return bytes(pg_id)


def _copy(record: PlacementGroupTableData) -> PlacementGroupTableData:
    copied = PlacementGroupTableData()
    copied.CopyFrom(record)
    return copied
