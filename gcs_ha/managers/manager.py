"""The manager lifecycle: what every GCS manager offers to the server (`start` with
`GcsInitData`, `stop`), and what it gets. Contract: DESIGN.md, "Lifecycle" and
"Module notes".

Errors: `GcsInitData.load` raises what the tables raise (CorruptDataError for a record
that does not parse; the StoreClient's errors). A manager's `start` may raise any
GcsHaError; the server then stops the managers already started and retries later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from gcs_ha.futures import cancel_and_wait
from gcs_ha.proto.ray.common_pb2 import TaskSpec
from gcs_ha.proto.ray.gcs_pb2 import (
    ActorTableData,
    GcsNodeInfo,
    JobTableData,
    PlacementGroupTableData,
)
from gcs_ha.proto.ray.gcs_service_pb2 import GcsSubscriberCommandBatchRequest
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GcsInitData:
    """Every table a manager needs at start, read once (Ray's GcsInitData), keyed by id."""

    jobs: dict[bytes, JobTableData] = field(default_factory=dict)
    nodes: dict[bytes, GcsNodeInfo] = field(default_factory=dict)
    actors: dict[bytes, ActorTableData] = field(default_factory=dict)
    actor_task_specs: dict[bytes, TaskSpec] = field(default_factory=dict)
    placement_groups: dict[bytes, PlacementGroupTableData] = field(default_factory=dict)
    subscribers: dict[bytes, GcsSubscriberCommandBatchRequest] = field(default_factory=dict)

    @classmethod
    async def load(cls, tables: GcsTableStorage) -> GcsInitData:
        """Read every table once. The job-indexed tables rebuild their job index from
        exactly the records read (`GcsTableWithJobId.load`)."""
        return cls(
            jobs=await tables.job_table.get_all(),
            nodes=await tables.node_table.get_all(),
            actors=await tables.actor_table.load(),
            actor_task_specs=await tables.actor_task_spec_table.load(),
            placement_groups=await tables.placement_group_table.get_all(),
            subscribers=await tables.subscriber_table.get_all(),
        )


class Manager(Protocol):
    """One GCS manager's lifecycle (rules: managers/DESIGN.md, "Lifecycle")."""

    @property
    def name(self) -> str:
        """A short name for logs ("internal_kv", "node", ...)."""
        ...

    async def start(self, init: GcsInitData) -> None:
        """Rebuild in-memory state from `init` and start background work (Ray's DoStart)."""
        ...

    async def stop(self) -> None:
        """Stop background work and outbound calls; drop in-memory state."""
        ...


class BackgroundTasks:
    """A manager's background tasks: spawned while started, all cancelled by `cancel_all`
    (from the manager's `stop`). A task that fails is logged with its traceback, never
    dropped silently; the failure does not stop the other tasks."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a task on the running loop until it ends or `cancel_all`."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def cancel(self) -> None:
        """Ask every task to stop (they end at their next await)."""
        for task in self._tasks:
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has ended (futures.cancel_and_wait: a
        task whose wait_for swallowed the cancellation is cancelled again)."""
        while self._tasks:  # tasks spawned meanwhile too
            tasks = list(self._tasks)
            self.cancel()
            await asyncio.gather(*(cancel_and_wait(task) for task in tasks))

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())
