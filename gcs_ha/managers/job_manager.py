"""The job manager (Ray's GcsJobManager): job ids (`next_job_id`), the job table, and job
lifecycle events (`add_job`, `mark_job_finished`, `on_node_removed`), published on
GCS_JOB_CHANNEL; `get_all_job_info` answers from memory with Ray's filters. Calls on the
same job are serialised; replays are harmless. Design: DESIGN.md, "Jobs, workers, task
events, runtime envs".

Errors: InvalidRequestError (a job id that is not 4 bytes, a negative limit), and
whatever the store raises (UnavailableError, NotLeaderError, UnknownOutcomeError, ...).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from google.protobuf import json_format

from gcs_ha.errors import GcsHaError, InvalidRequestError
from gcs_ha.managers.function_manager import FunctionManager
from gcs_ha.managers.keyed_locks import KeyedLocks
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.ports import Publisher
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import Address
from gcs_ha.proto.ray.gcs_pb2 import JobsAPIInfo, JobTableData
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

JOB_ID_BYTES = 4
JOB_NAMESPACE = b"job"  # the Ray Job API's KV namespace
JOB_DATA_KEY_PREFIX = b"_ray_internal_job_info_"
SUBMISSION_ID_KEY = "job_submission_id"  # JobConfig.metadata key of Job API jobs
NUM_PENDING_TASKS_TIMEOUT_S = 1.0

Clock = Callable[[], int]
JobFinishedListener = Callable[[JobTableData], None]


def unix_ms() -> int:
    """The wall clock in Unix milliseconds (Ray's NowUnixMillis)."""
    return time.time_ns() // 1_000_000


def job_number(job_id: bytes) -> int:
    """The counter a job id encodes (4 little-endian bytes)."""
    return int.from_bytes(job_id, "little")


class DriverProbe(Protocol):
    """Asks a driver's core worker how many tasks it still has pending."""

    async def num_pending_tasks(self, driver: Address, timeout_s: float) -> int:
        """CoreWorkerService.NumPendingTasks on `driver`; raises a GcsHaError
        (UnavailableError) when the driver cannot be reached in `timeout_s`."""
        ...


class JobManager:
    """Serves JobInfoGcsService over the job table and an in-memory copy of it."""

    def __init__(
        self,
        tables: GcsTableStorage,
        publisher: Publisher,
        function_manager: FunctionManager,
        runtime_env_manager: RuntimeEnvManager,
        *,
        driver_probe: DriverProbe | None = None,
        clock: Clock = unix_ms,
    ) -> None:
        self._tables = tables
        self._publisher = publisher
        self._functions = function_manager
        self._runtime_envs = runtime_env_manager
        self._probe = driver_probe
        self._clock = clock
        self._jobs: dict[bytes, JobTableData] = {}
        self._listeners: list[JobFinishedListener] = []
        self._locks = KeyedLocks()

    @property
    def name(self) -> str:
        return "job"

    async def start(self, init: GcsInitData) -> None:
        """Copy the job table; the drivers of live jobs hold their functions and URIs."""
        self._jobs = {bytes(job_id): _copy(job) for job_id, job in init.jobs.items()}
        for job_id, job in self._jobs.items():
            if not job.is_dead:
                self._take_references(job_id, job)

    async def stop(self) -> None:
        self._jobs = {}

    def add_job_finished_listener(self, listener: JobFinishedListener) -> None:
        """Call `listener(job)` after each job is marked finished (and on replays).
        Listeners must not block and must be idempotent."""
        self._listeners.append(listener)

    # -- reads ----------------------------------------------------------------------------

    def get_job(self, job_id: bytes) -> JobTableData | None:
        """A copy of the job's record, or None."""
        job = self._jobs.get(bytes(job_id))
        return None if job is None else _copy(job)

    def finished_job_ids(self) -> list[bytes]:
        """The ids of the finished jobs."""
        return [job_id for job_id, job in self._jobs.items() if job.is_dead]

    async def get_all_job_info(
        self,
        *,
        limit: int | None = None,
        job_or_submission_id: str | None = None,
        skip_submission_job_info: bool = False,
        skip_is_running_tasks: bool = False,
    ) -> list[JobTableData]:
        """Jobs in id order matching `job_or_submission_id` (a job hex id or a Job API
        submission id), at most `limit`, with the optional fields filled unless skipped."""
        if limit is not None and limit < 0:
            raise InvalidRequestError(f"Invalid limit {limit}")
        selected: list[JobTableData] = []
        for job_id in sorted(self._jobs, key=job_number):
            if limit is not None and len(selected) >= limit:
                break
            job = self._jobs[job_id]
            if _matches(job_id, job, job_or_submission_id):
                selected.append(_copy(job))
        fills: list[Coroutine[Any, Any, None]] = []
        if not skip_is_running_tasks:
            fills.extend(self._fill_is_running_tasks(job) for job in selected)
        if not skip_submission_job_info:
            fills.append(self._fill_job_info(selected))
        await asyncio.gather(*fills)
        return selected

    # -- writes ---------------------------------------------------------------------------

    async def next_job_id(self) -> int:
        """The next job number from the replicated job counter (GetNextJobID)."""
        return await self._tables.next_job_id()

    async def add_job(self, data: JobTableData) -> None:
        """Register a job (AddJob): store it alive, started now, and publish it."""
        job_id = _check_job_id(data.job_id)
        async with self._locks.hold(job_id):
            existing = self._jobs.get(job_id)
            if existing is not None:
                log.info("job %s added again (replay); keeping its record", job_id.hex())
                if not existing.is_dead:
                    self._take_references(job_id, existing)
                self._publish(job_id, existing)
                return
            job = _copy(data)
            job.ClearField("is_running_tasks")
            job.ClearField("job_info")
            job.is_dead = False
            job.start_time = job.timestamp = self._clock()
            await self._tables.job_table.put(job_id, job)
            self._jobs[job_id] = job
            self._take_references(job_id, job)
            log.info("job %s added (driver pid %d)", job_id.hex(), job.driver_pid)
            self._publish(job_id, job)

    async def mark_job_finished(self, job_id: bytes) -> None:
        """Finish a job (MarkJobFinished): store it dead, ended now, publish it, tell the
        listeners, release its references. An unknown job is logged and ignored (Ray
        answers OK too)."""
        job_id = _check_job_id(job_id)
        async with self._locks.hold(job_id):
            job = self._jobs.get(job_id)
            if job is None:
                log.error("cannot mark job %s finished: no such job", job_id.hex())
                return
            if not job.is_dead:
                job = _copy(job)
                job.is_dead = True
                job.end_time = job.timestamp = self._clock()
                await self._tables.job_table.put(job_id, job)
                self._jobs[job_id] = job
                log.info("job %s finished", job_id.hex())
            self._publish(job_id, job)
            self._runtime_envs.remove_uri_reference(job_id.hex())
            self._notify_finished(job)
            await self._functions.remove_job_reference(job_id)

    async def on_node_removed(self, node_id: bytes) -> None:
        """Finish every live job whose driver ran on the dead node `node_id` (all at
        once); raises the first failure after all were tried."""
        doomed = [
            job_id
            for job_id, job in self._jobs.items()
            if not job.is_dead and job.driver_address.node_id == bytes(node_id)
        ]
        if doomed:
            log.info("node %s died: finishing %d job(s)", bytes(node_id).hex(), len(doomed))
        results = await asyncio.gather(
            *(self.mark_job_finished(job_id) for job_id in doomed), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def collect_garbage(self, init: GcsInitData) -> None:
        """After-serving hook: remove exported functions that finished jobs left behind
        (see FunctionManager.collect_garbage)."""
        await self._functions.collect_garbage(self.finished_job_ids())

    # -- internals ----------------------------------------------------------------------

    def _take_references(self, job_id: bytes, job: JobTableData) -> None:
        self._functions.add_job_reference(job_id)
        if job.config.HasField("runtime_env_info"):
            self._runtime_envs.add_uri_reference(job_id.hex(), job.config.runtime_env_info)

    def _publish(self, job_id: bytes, job: JobTableData) -> None:
        message = pubsub_pb2.PubMessage(channel_type=pubsub_pb2.GCS_JOB_CHANNEL, key_id=job_id)
        message.job_message.CopyFrom(job)
        self._publisher.publish(message)

    async def _fill_is_running_tasks(self, job: JobTableData) -> None:
        if job.is_dead:
            job.is_running_tasks = False
            return
        if self._probe is None:
            return  # unknown, as when Ray cannot reach the driver
        try:
            pending = await self._probe.num_pending_tasks(
                job.driver_address, NUM_PENDING_TASKS_TIMEOUT_S
            )
        except GcsHaError as exc:
            log.warning("NumPendingTasks of job %s failed: %s", job.job_id.hex(), exc)
            return
        job.is_running_tasks = pending > 0

    async def _fill_job_info(self, jobs: list[JobTableData]) -> None:
        wanted: dict[bytes, list[JobTableData]] = {}
        for job in jobs:
            submission_id = job.config.metadata.get(SUBMISSION_ID_KEY)
            if submission_id is not None:
                key = JOB_DATA_KEY_PREFIX + submission_id.encode()
                wanted.setdefault(key, []).append(job)
        if not wanted:
            return
        found = await self._tables.internal_kv.multi_get(JOB_NAMESPACE, list(wanted))
        for key, raw in found.items():
            info = _parse_job_info(key, raw)
            if info is not None:
                for job in wanted[key]:
                    job.job_info.CopyFrom(info)

    def _notify_finished(self, job: JobTableData) -> None:
        for listener in self._listeners:
            try:
                listener(_copy(job))
            except Exception:
                log.exception("job-finished listener %r failed", listener)


def _check_job_id(job_id: bytes) -> bytes:
    if len(job_id) != JOB_ID_BYTES:
        raise InvalidRequestError(f"a job id has {JOB_ID_BYTES} bytes, got {len(job_id)}")
    return bytes(job_id)


def _matches(job_id: bytes, job: JobTableData, wanted: str | None) -> bool:
    if wanted is None or job_id.hex() == wanted:
        return True
    return job.config.metadata.get(SUBMISSION_ID_KEY) == wanted


def _parse_job_info(key: bytes, raw: bytes) -> JobsAPIInfo | None:
    if not raw:
        return None
    info = JobsAPIInfo()
    try:
        json_format.Parse(raw, info, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        log.error("job info %r is not valid JobsAPIInfo JSON: %s", key, exc)
        return None
    return info


def _copy(job: JobTableData) -> JobTableData:
    copy = JobTableData()
    copy.CopyFrom(job)
    return copy
