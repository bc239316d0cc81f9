"""The task event manager (Ray's GcsTaskManager): a bounded in-memory store of task events
(AddTaskEventData, GetTaskEvents), merged per task attempt, evicted in three tiers, and
marked FAILED when their job finishes or their worker dies. Not replicated. Design:
DESIGN.md, "Jobs, workers, task events, runtime envs".

Errors: InvalidRequestError for a filter with an unknown predicate (Ray's InvalidArgument).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gcs_ha.errors import InvalidRequestError
from gcs_ha.managers.manager import BackgroundTasks, GcsInitData
from gcs_ha.proto.ray import common_pb2, gcs_service_pb2
from gcs_ha.proto.ray.common_pb2 import RayErrorInfo, TaskStatus
from gcs_ha.proto.ray.gcs_pb2 import JobTableData, TaskEventData, TaskEvents, WorkerTableData

log = logging.getLogger(__name__)

MAX_TASK_EVENTS = 100_000
MAX_PROFILE_EVENTS_PER_TASK = 1000
MAX_DROPPED_ATTEMPTS_PER_JOB = 1_000_000
JOB_DONE_DELAY_S = 15.0
WORKER_DEAD_DELAY_S = 1.0
JOB_ID_BYTES = 4

Attempt = tuple[bytes, int]  # (task id, attempt number)
Filters = gcs_service_pb2.GetTaskEventsRequest.Filters
TERMINAL = (common_pb2.FINISHED, common_pb2.FAILED)
# TaskStatus values in declaration order, last first: a task's state is the last one
# declared among those it has a timestamp for (Ray's rule).
STATES_LAST_FIRST = tuple(reversed(TaskStatus.DESCRIPTOR.values))


@dataclass
class TaskEventsPage:
    """GetTaskEvents's answer."""

    events: list[TaskEvents]
    num_profile_events_dropped: int = 0
    num_status_events_dropped: int = 0
    num_total_stored: int = 0
    num_filtered: int = 0
    num_truncated: int = 0


@dataclass
class _JobSummary:
    """Data loss of one job: the attempts dropped (kept to drop their later events)."""

    dropped: OrderedDict[Attempt, None] = field(default_factory=OrderedDict)
    forgotten: int = 0  # dropped attempts no longer remembered
    profile_events_dropped: int = 0

    def drop(self, attempt: Attempt, cap: int) -> None:
        self.dropped[attempt] = None
        if len(self.dropped) > cap:  # forget the overflow and 10% more, as Ray does
            excess = len(self.dropped) - cap
            for _ in range(min(len(self.dropped), excess + excess // 10)):
                self.dropped.popitem(last=False)
                self.forgotten += 1

    @property
    def attempts_dropped(self) -> int:
        return len(self.dropped) + self.forgotten


def is_terminated(events: TaskEvents) -> bool:
    return any(state in events.state_updates.state_ts_ns for state in TERMINAL)


def gc_tier(events: TaskEvents) -> int:
    """0: finished (evicted first), 1: actor task, 2: anything else."""
    if common_pb2.FINISHED in events.state_updates.state_ts_ns:
        return 0
    actor_types = (common_pb2.ACTOR_TASK, common_pb2.ACTOR_CREATION_TASK)
    if events.HasField("task_info") and events.task_info.type in actor_types:
        return 1
    return 2


def latest_state(events: TaskEvents) -> str:
    """The name of the task's current state (NIL without any)."""
    stamps = events.state_updates.state_ts_ns
    return next((v.name for v in STATES_LAST_FIRST if v.number in stamps), "NIL")


def _valid_id(value: bytes) -> bool:
    return bool(value) and value != b"\xff" * len(value)


class TaskEventStore:
    """Task attempts in three eviction tiers, with indexes by job, task and worker."""

    def __init__(self, max_events: int, max_profile_events: int, max_dropped: int) -> None:
        self._max_events = max_events
        self._max_profile = max_profile_events
        self._max_dropped = max_dropped
        self._tiers: tuple[OrderedDict[Attempt, TaskEvents], ...] = tuple(
            OrderedDict() for _ in range(3)
        )
        self._tier_of: dict[Attempt, int] = {}
        self._worker_of: dict[Attempt, bytes] = {}
        self._by_job: dict[bytes, set[Attempt]] = {}
        self._by_task: dict[bytes, set[Attempt]] = {}
        self._by_worker: dict[bytes, set[Attempt]] = {}
        self.summaries: dict[bytes, _JobSummary] = {}

    def __len__(self) -> int:
        return len(self._tier_of)

    def add(self, events: TaskEvents) -> None:
        """Merge one report of a task attempt; evict one attempt when over the bound."""
        job_id, attempt = bytes(events.job_id), (bytes(events.task_id), events.attempt_number)
        if not (_valid_id(job_id) and _valid_id(attempt[0])):
            return  # e.g. profile events recorded outside any task
        if attempt in self._summary(job_id).dropped:
            return
        tier = self._tier_of.get(attempt)
        if tier is None:
            stored = TaskEvents()
            stored.CopyFrom(events)
        else:
            stored = self._tiers[tier][attempt]
            stored.MergeFrom(events)
        self._cut_profile_events(job_id, stored)
        self._place(attempt, stored, tier)
        if 0 < self._max_events < len(self):
            self._evict_one()

    def record_data_loss(self, data: TaskEventData) -> None:
        """Attempts a worker dropped, and its dropped profile events count."""
        for dropped in data.dropped_task_attempts:
            attempt = (bytes(dropped.task_id), dropped.attempt_number)
            if not _valid_id(attempt[0]):
                continue
            job_id = attempt[0][-JOB_ID_BYTES:]  # a TaskID ends with its job id
            self._summary(job_id).drop(attempt, self._max_dropped)
            if attempt in self._tier_of:
                self._remove(attempt)
        if data.num_profile_events_dropped > 0 and _valid_id(bytes(data.job_id)):
            summary = self._summary(bytes(data.job_id))
            summary.profile_events_dropped += data.num_profile_events_dropped

    def ordered(self, only: set[Attempt] | None = None) -> Iterator[TaskEvents]:
        """Attempts in answer order: tier by tier from the first evicted, newest first."""
        for queue in self._tiers:
            for attempt in reversed(queue):
                if only is None or attempt in only:
                    yield queue[attempt]

    def attempts_of_job(self, job_id: bytes) -> set[Attempt]:
        return set(self._by_job.get(bytes(job_id), ()))

    def attempts_of_task(self, task_id: bytes) -> set[Attempt]:
        return set(self._by_task.get(bytes(task_id), ()))

    def mark_failed(self, attempts: set[Attempt], ts_ns: int, error: RayErrorInfo) -> int:
        """Mark the attempts not yet terminated FAILED at `ts_ns`; how many changed."""
        changed = 0
        for attempt in attempts:
            tier = self._tier_of.get(attempt)
            if tier is None or is_terminated(events := self._tiers[tier][attempt]):
                continue
            events.state_updates.state_ts_ns[common_pb2.FAILED] = ts_ns
            events.state_updates.error_info.CopyFrom(error)
            changed += 1
        return changed

    def attempts_of_worker(self, worker_id: bytes) -> set[Attempt]:
        return set(self._by_worker.get(bytes(worker_id), ()))

    def num_profile_events_dropped(self) -> int:
        return sum(s.profile_events_dropped for s in self.summaries.values())

    def num_attempts_dropped(self) -> int:
        return sum(s.attempts_dropped for s in self.summaries.values())

    def _summary(self, job_id: bytes) -> _JobSummary:
        return self.summaries.setdefault(job_id, _JobSummary())

    def _cut_profile_events(self, job_id: bytes, events: TaskEvents) -> None:
        excess = len(events.profile_events.events) - self._max_profile
        if self._max_profile >= 0 and excess > 0:
            del events.profile_events.events[:excess]
            self._summary(job_id).profile_events_dropped += excess

    def _place(self, attempt: Attempt, events: TaskEvents, tier: int | None) -> None:
        target = gc_tier(events)
        if tier != target:
            if tier is not None:
                del self._tiers[tier][attempt]
            self._tiers[target][attempt] = events  # newest of its new tier
            self._tier_of[attempt] = target
        job_id, task_id = bytes(events.job_id), attempt[0]
        self._by_job.setdefault(job_id, set()).add(attempt)
        self._by_task.setdefault(task_id, set()).add(attempt)
        worker_id = bytes(events.state_updates.worker_id)
        if worker_id and self._worker_of.get(attempt) != worker_id:
            self._unindex_worker(attempt)
            self._worker_of[attempt] = worker_id
            self._by_worker.setdefault(worker_id, set()).add(attempt)

    def _evict_one(self) -> None:
        queue = next(q for q in self._tiers if q)
        attempt = next(iter(queue))
        events = queue[attempt]
        summary = self._summary(bytes(events.job_id))
        summary.drop(attempt, self._max_dropped)
        summary.profile_events_dropped += len(events.profile_events.events)
        self._remove(attempt)

    def _remove(self, attempt: Attempt) -> None:
        tier = self._tier_of.pop(attempt)
        events = self._tiers[tier].pop(attempt)
        _discard(self._by_job, bytes(events.job_id), attempt)
        _discard(self._by_task, attempt[0], attempt)
        self._unindex_worker(attempt)

    def _unindex_worker(self, attempt: Attempt) -> None:
        worker_id = self._worker_of.pop(attempt, None)
        if worker_id is not None:
            _discard(self._by_worker, worker_id, attempt)


def _discard(index: dict[bytes, set[Attempt]], key: bytes, attempt: Attempt) -> None:
    attempts = index.get(key)
    if attempts is not None:
        attempts.discard(attempt)
        if not attempts:
            del index[key]


class TaskManager:
    """Serves TaskInfoGcsService from a TaskEventStore rebuilt empty at each start."""

    def __init__(
        self,
        *,
        max_task_events: int = MAX_TASK_EVENTS,
        max_profile_events_per_task: int = MAX_PROFILE_EVENTS_PER_TASK,
        max_dropped_attempts_per_job: int = MAX_DROPPED_ATTEMPTS_PER_JOB,
        job_done_delay_s: float = JOB_DONE_DELAY_S,
        worker_dead_delay_s: float = WORKER_DEAD_DELAY_S,
    ) -> None:
        self._new_store: Callable[[], TaskEventStore] = lambda: TaskEventStore(
            max_task_events, max_profile_events_per_task, max_dropped_attempts_per_job
        )
        self.store = self._new_store()
        self._job_done_delay_s = job_done_delay_s
        self._worker_dead_delay_s = worker_dead_delay_s
        self._tasks = BackgroundTasks("task")

    @property
    def name(self) -> str:
        return "task"

    async def start(self, init: GcsInitData) -> None:
        """Start with an empty store (task events are not replicated)."""
        self.store = self._new_store()

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        self.store = self._new_store()

    def add_task_event_data(self, data: TaskEventData) -> None:
        """Record one AddTaskEventData batch."""
        self.store.record_data_loss(data)
        for events in data.events_by_task:
            self.store.add(events)

    def get_task_events(self, limit: int | None, filters: Filters) -> TaskEventsPage:
        """GetTaskEvents: the attempts passing every filter, at most `limit`."""
        for predicate in _predicates(filters):
            _check_predicate(predicate)
        page = TaskEventsPage(events=[])
        candidates = self._candidates(filters, page)
        passes = compile_filters(filters)
        page.num_total_stored = len(candidates) if candidates is not None else len(self.store)
        for events in self.store.ordered(candidates):
            if not passes(events):
                page.num_filtered += 1
            elif limit is None or limit < 0 or len(page.events) < limit:
                copy = TaskEvents()
                copy.CopyFrom(events)
                page.events.append(copy)
            else:
                page.num_truncated += 1
                page.num_profile_events_dropped += len(events.profile_events.events)
                page.num_status_events_dropped += int(events.HasField("state_updates"))
        return page

    def on_job_finished(self, job: JobTableData) -> None:
        """Job-finished listener: fail the job's unfinished attempts after a delay."""
        self._tasks.spawn(self._fail_job_tasks(bytes(job.job_id), job.end_time), "job-done")

    def on_worker_dead(self, worker: WorkerTableData) -> None:
        """Worker-dead listener: fail the attempts the worker ran, after a delay."""
        self._tasks.spawn(self._fail_worker_tasks(worker), "worker-dead")

    def _candidates(self, filters: Filters, page: TaskEventsPage) -> set[Attempt] | None:
        """The attempts an equality filter on task or job narrows to (None: all); fills
        the data-loss counts for the scope queried."""
        task_ids = {bytes(f.task_id) for f in filters.task_filters if f.predicate == 0}
        job_ids = {bytes(f.job_id) for f in filters.job_filters if f.predicate == 0}
        if filters.task_filters and task_ids:
            return self.store.attempts_of_task(task_ids.pop()) if len(task_ids) == 1 else set()
        if not filters.task_filters and filters.job_filters and job_ids:
            if len(job_ids) > 1:
                return set()
            job_id = job_ids.pop()
            summary = self.store.summaries.get(job_id)
            if summary is not None:
                page.num_profile_events_dropped = summary.profile_events_dropped
                page.num_status_events_dropped = summary.attempts_dropped
            return self.store.attempts_of_job(job_id)
        page.num_profile_events_dropped = self.store.num_profile_events_dropped()
        page.num_status_events_dropped = self.store.num_attempts_dropped()
        return None

    async def _fail_job_tasks(self, job_id: bytes, end_time_ms: int) -> None:
        await asyncio.sleep(self._job_done_delay_s)
        error = RayErrorInfo(
            error_type=common_pb2.WORKER_DIED,
            error_message=(
                f"Job finishes ({job_id.hex()}) as driver exits. "
                "Marking all non-terminal tasks as failed."
            ),
        )
        failed = self.store.mark_failed(
            self.store.attempts_of_job(job_id), end_time_ms * 1_000_000, error
        )
        summary = self.store.summaries.get(job_id)
        if summary is not None:  # no more events will come: forget the dropped attempts
            summary.forgotten += len(summary.dropped)
            summary.dropped.clear()
        log.info("job %s finished: %d running task attempt(s) marked failed", job_id.hex(), failed)

    async def _fail_worker_tasks(self, worker: WorkerTableData) -> None:
        await asyncio.sleep(self._worker_dead_delay_s)
        worker_id = bytes(worker.worker_address.worker_id)
        error = RayErrorInfo(
            error_type=common_pb2.WORKER_DIED,
            error_message=(
                f"Worker running the task ({worker_id.hex()}) died with exit_type: "
                f"{worker.exit_type} with error_message: {worker.exit_detail}"
            ),
        )
        self.store.mark_failed(
            self.store.attempts_of_worker(worker_id), worker.end_time_ms * 1_000_000, error
        )


def _predicates(filters: Filters) -> Iterator[int]:
    yield from (f.predicate for f in filters.job_filters)
    yield from (f.predicate for f in filters.task_filters)
    yield from (f.predicate for f in filters.actor_filters)
    yield from (f.predicate for f in filters.task_name_filters)
    yield from (f.predicate for f in filters.state_filters)


def _check_predicate(predicate: int) -> None:
    if predicate not in (gcs_service_pb2.EQUAL, gcs_service_pb2.NOT_EQUAL):
        raise InvalidRequestError(
            f"Unknown filter predicate: {predicate}. Supported predicates are '=' and '!='."
        )


def _compare(lhs: object, predicate: int, rhs: object) -> bool:
    return (lhs == rhs) if predicate == gcs_service_pb2.EQUAL else (lhs != rhs)


Check = Callable[[TaskEvents], bool]
Getter = Callable[[TaskEvents], object]


def _check(get: Getter, predicate: int, value: object) -> Check:
    def check(events: TaskEvents) -> bool:
        return _compare(get(events), predicate, value)

    return check


def _task_id(e: TaskEvents) -> object:
    return e.task_id


def _job_id(e: TaskEvents) -> object:
    return e.task_info.job_id


def _actor_id(e: TaskEvents) -> object:
    return e.task_info.actor_id


def _name(e: TaskEvents) -> object:
    return e.task_info.name.lower()


def _state(e: TaskEvents) -> object:
    return latest_state(e).lower()


def _not_driver(e: TaskEvents) -> bool:
    return e.task_info.type != common_pb2.DRIVER_TASK


def compile_filters(filters: Filters) -> Check:
    """One function telling whether an attempt passes every filter (Ray's filter, all
    groups ANDed), built once per query so that each attempt pays only for the filters
    asked for."""
    checks: list[Check] = [_not_driver] if filters.exclude_driver else []
    checks.extend(_check(_task_id, f.predicate, f.task_id) for f in filters.task_filters)
    checks.extend(_check(_job_id, f.predicate, f.job_id) for f in filters.job_filters)
    checks.extend(_check(_actor_id, f.predicate, f.actor_id) for f in filters.actor_filters)
    checks.extend(
        _check(_name, f.predicate, f.task_name.lower()) for f in filters.task_name_filters
    )
    checks.extend(_check(_state, f.predicate, f.state.lower()) for f in filters.state_filters)

    def passes(events: TaskEvents) -> bool:
        if not events.HasField("task_info"):
            return False
        return all(check(events) for check in checks) if checks else True

    return passes
