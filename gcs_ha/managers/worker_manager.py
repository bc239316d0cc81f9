"""The worker manager (Ray's GcsWorkerManager): the worker table (`add_worker_info`,
`report_worker_failure`, the debugger and state API updates and reads), the retention
queue of dead workers, and the worker-dead listeners. Calls on the same worker are
serialised; replays are harmless except `update_num_paused_threads` (a delta). Design:
DESIGN.md, "Jobs, workers, task events, runtime envs".

Errors: InvalidRequestError (no worker id), NotFoundError (updating an unknown worker),
and whatever the store raises (UnavailableError, NotLeaderError, UnknownOutcomeError, ...).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gcs_ha.errors import InvalidRequestError, NotFoundError
from gcs_ha.managers.keyed_locks import KeyedLocks
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.managers.ports import Publisher
from gcs_ha.managers.system_config import Setting, apply_settings
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import INTENDED_SYSTEM_EXIT, INTENDED_USER_EXIT
from gcs_ha.proto.ray.gcs_pb2 import WorkerDeltaData, WorkerTableData
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

MAX_DEAD_WORKERS = 100_000  # Ray 2.60's maximum_gcs_dead_worker_cached_count
INTENDED_EXITS = frozenset({INTENDED_USER_EXIT, INTENDED_SYSTEM_EXIT})

WorkerDeadListener = Callable[[WorkerTableData], None]


@dataclass(frozen=True)
class WorkerPage:
    """GetAllWorkerInfo's answer: the records, the table size, how many were skipped."""

    workers: list[WorkerTableData]
    total: int
    num_filtered: int


def retention_tier(worker: WorkerTableData) -> int:
    """0 for an intended exit (evicted first), 1 for a failure."""
    return 0 if worker.exit_type in INTENDED_EXITS else 1

SETTINGS = {"maximum_gcs_dead_worker_cached_count": Setting("_max_dead")}  # Ray's system config


class WorkerManager:
    """Serves WorkerInfoGcsService over the worker table."""

    def __init__(
        self,
        tables: GcsTableStorage,
        publisher: Publisher,
        *,
        max_dead_workers: int = MAX_DEAD_WORKERS,
    ) -> None:
        self._table = tables.worker_table
        self._publisher = publisher
        self._max_dead = max_dead_workers
        self._listeners: list[WorkerDeadListener] = []
        self._tiers: tuple[OrderedDict[bytes, None], ...] = (OrderedDict(), OrderedDict())
        self._restored = asyncio.Event()
        self._locks = KeyedLocks()
        self._tasks = BackgroundTasks("worker")

    @property
    def name(self) -> str:
        return "worker"

    async def start(self, init: GcsInitData) -> None:
        """Rebuild the dead-worker queue from the table, in the background."""
        self._clear()
        self._tasks.spawn(self._restore_dead_workers(), "restore-dead-workers")

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        self._clear()

    def apply_system_config(self, config: Mapping[str, Any]) -> None:
        """Ray's settings of this manager in the head's system config (SETTINGS)."""
        apply_settings(self, config, SETTINGS)

    def add_worker_dead_listener(self, listener: WorkerDeadListener) -> None:
        """Call `listener(worker)` with the dead worker's record after each failure
        report (and on replays). Listeners must not block and must be idempotent."""
        self._listeners.append(listener)

    def num_dead_workers(self) -> int:
        """How many dead workers the retention queue holds."""
        return sum(len(tier) for tier in self._tiers)

    async def wait_restored(self) -> None:
        """Wait until the retention queue has been rebuilt after `start`."""
        await self._restored.wait()

    # -- reads ----------------------------------------------------------------------------

    async def get_worker_info(self, worker_id: bytes) -> WorkerTableData | None:
        """The worker's record, or None (GetWorkerInfo answers OK with no data then)."""
        return await self._table.get(bytes(worker_id)) if worker_id else None

    async def get_all_worker_info(
        self,
        *,
        limit: int | None = None,
        exist_paused_threads: bool = False,
        is_alive: bool = False,
    ) -> WorkerPage:
        """Records passing the filters (only workers with paused threads, only live
        ones), at most `limit`; `num_filtered` counts those skipped before the limit."""
        records = await self._table.get_all()
        selected: list[WorkerTableData] = []
        filtered = 0
        for _, worker in sorted(records.items()):
            if limit is not None and len(selected) >= limit:
                break
            if (exist_paused_threads and worker.num_paused_threads == 0) or (
                is_alive and not worker.is_alive
            ):
                filtered += 1
            else:
                selected.append(worker)
        return WorkerPage(selected, len(records), filtered)

    # -- writes ---------------------------------------------------------------------------

    async def add_worker_info(self, data: WorkerTableData) -> None:
        """Store a worker's record (AddWorkerInfo). A replay never revives a dead one."""
        worker_id = _check_worker_id(data.worker_address.worker_id)
        async with self._locks.hold(worker_id):
            stored = await self._table.get(worker_id)
            if stored is not None and not stored.is_alive and data.is_alive:
                log.info("worker %s is dead; ignoring its late AddWorkerInfo", worker_id.hex())
                return
            if stored != data:
                await self._table.put(worker_id, data)
            if not data.is_alive and (stored is None or stored.is_alive):
                await self._track_dead(worker_id, retention_tier(data))

    async def report_worker_failure(self, failure: WorkerTableData) -> None:
        """Mark a worker dead (ReportWorkerFailure): merge, store, publish, notify."""
        worker_id = _check_worker_id(failure.worker_address.worker_id)
        async with self._locks.hold(worker_id):
            stored = await self._table.get(worker_id)
            worker = WorkerTableData() if stored is None else _copy(stored)
            worker.MergeFrom(failure)
            worker.is_alive = False
            if worker != stored:
                await self._table.put(worker_id, worker)
            self._publish_failure(worker_id, worker)
            self._notify_dead(worker)
            if stored is None or stored.is_alive:
                await self._track_dead(worker_id, retention_tier(worker))
        level = logging.DEBUG if worker.exit_type in INTENDED_EXITS else logging.WARNING
        log.log(
            level,
            "worker %s on node %s exited: exit_type=%d %s",
            worker_id.hex(),
            worker.worker_address.node_id.hex(),
            worker.exit_type,
            worker.exit_detail,
        )

    async def update_debugger_port(self, worker_id: bytes, port: int) -> None:
        """Record the port of the worker's debugger (UpdateWorkerDebuggerPort)."""

        def change(worker: WorkerTableData) -> None:
            worker.debugger_port = port

        await self._update(worker_id, change)

    async def update_num_paused_threads(self, worker_id: bytes, delta: int) -> None:
        """Add `delta` to the worker's paused-thread count (UpdateWorkerNumPausedThreads)."""

        def change(worker: WorkerTableData) -> None:
            count = worker.num_paused_threads + delta
            if count < 0:
                log.warning("worker %s: paused threads would be %d; 0", worker_id.hex(), count)
            worker.num_paused_threads = max(count, 0)

        await self._update(worker_id, change)

    # -- internals ----------------------------------------------------------------------

    async def _update(self, worker_id: bytes, change: Callable[[WorkerTableData], None]) -> None:
        worker_id = _check_worker_id(worker_id)
        async with self._locks.hold(worker_id):
            worker = await self._table.get(worker_id)
            if worker is None:
                raise NotFoundError(f"worker {worker_id.hex()} not found")
            change(worker)
            await self._table.put(worker_id, worker)

    def _publish_failure(self, worker_id: bytes, worker: WorkerTableData) -> None:
        message = pubsub_pb2.PubMessage(
            channel_type=pubsub_pb2.GCS_WORKER_DELTA_CHANNEL, key_id=worker_id
        )
        message.worker_delta_message.CopyFrom(
            WorkerDeltaData(
                worker_id=worker.worker_address.worker_id,
                node_id=worker.worker_address.node_id,
            )
        )
        self._publisher.publish(message)

    def _notify_dead(self, worker: WorkerTableData) -> None:
        for listener in self._listeners:
            try:
                listener(_copy(worker))
            except Exception:
                log.exception("worker-dead listener %r failed", listener)

    async def _track_dead(self, worker_id: bytes, tier: int) -> None:
        """Queue a newly dead worker; over the cap (once restored), evict the oldest."""
        for queue in self._tiers:
            queue.pop(worker_id, None)
        self._tiers[tier][worker_id] = None
        if self._restored.is_set():
            await self._evict_over_cap()

    async def _evict_over_cap(self) -> None:
        doomed: list[bytes] = []
        while self.num_dead_workers() > self._max_dead:
            queue = next(q for q in self._tiers if q)
            worker_id, _ = queue.popitem(last=False)
            doomed.append(worker_id)
        if doomed:
            await self._table.batch_delete(doomed)
            log.info("evicted %d dead worker(s) over the cap %d", len(doomed), self._max_dead)

    async def _restore_dead_workers(self) -> None:
        records = await self._table.get_all()
        dead = sorted(
            ((w.end_time_ms, w.timestamp, wid) for wid, w in records.items() if not w.is_alive),
        )
        queued = {wid for queue in self._tiers for wid in queue}  # died during the restore
        for tier, queue in enumerate(self._tiers):
            restored = [
                wid
                for _, _, wid in dead
                if retention_tier(records[wid]) == tier and wid not in queued
            ]
            newer = list(queue)  # the newest deaths stay last
            queue.clear()
            for worker_id in [*restored, *newer]:
                queue[worker_id] = None
        self._restored.set()
        await self._evict_over_cap()

    def _clear(self) -> None:
        for queue in self._tiers:
            queue.clear()
        self._restored = asyncio.Event()


def _check_worker_id(worker_id: bytes) -> bytes:
    if not worker_id:
        raise InvalidRequestError("no worker id")
    return bytes(worker_id)


def _copy(worker: WorkerTableData) -> WorkerTableData:
    copy = WorkerTableData()
    copy.CopyFrom(worker)
    return copy
