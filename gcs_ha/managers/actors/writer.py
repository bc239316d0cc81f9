"""How the actor manager stores actors: one write per change, in order, then the news.
`ActorWriter.write(actor, ...)` snapshots the record (and optionally the creation task),
stores them in a background task, and only once that committed runs `then` (publish,
reply). Ordering argument: actors/DESIGN.md, "Module notes".

Errors: none raised; a failed write is logged and returned as the task's result (the
manager is losing leadership, and the next leader reloads the tables).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from gcs_ha.errors import GcsHaError
from gcs_ha.managers.actors.gcs_actor import GcsActor
from gcs_ha.managers.actors.lease_intents import ActorLeaseIntents
from gcs_ha.managers.manager import BackgroundTasks
from gcs_ha.proto.ray.common_pb2 import TaskSpec
from gcs_ha.storage.tables import GcsTableStorage

log = logging.getLogger(__name__)

WriteTask = asyncio.Task[GcsHaError | None]


class ActorWriter:
    """Background, ordered writes of actor records (actors/DESIGN.md, "Module notes")."""

    def __init__(
        self, tables: GcsTableStorage, intents: ActorLeaseIntents, tasks: BackgroundTasks
    ) -> None:
        self._tables = tables
        self._intents = intents
        self._tasks = tasks

    def write(
        self,
        actor: GcsActor,
        *,
        spec: bool = False,
        clear_intent: bool = False,
        delete_spec: bool = False,
        then: Callable[[], None] | None = None,
    ) -> WriteTask:
        """Store the actor's record as it is now, then run `then`; the task's result is
        the store's error, or None."""
        actor_id, record = actor.actor_id, actor.snapshot()
        spec_copy = TaskSpec.FromString(actor.spec_snapshot()) if spec else None

        async def write() -> GcsHaError | None:
            writes: list[Coroutine[Any, Any, object]] = []
            if spec_copy is not None:  # first: see actors/DESIGN.md, "Module notes"
                writes.append(self._tables.actor_task_spec_table.put(actor_id, spec_copy))
            writes.append(self._tables.actor_table.put(actor_id, record))
            if clear_intent:
                writes.append(self._intents.clear(actor_id))
            try:
                await asyncio.gather(*writes)
                if delete_spec:
                    await self._tables.actor_task_spec_table.delete(actor_id)
            except GcsHaError as exc:
                log.warning("actor %s: write failed: %s", actor_id.hex(), exc)
                return exc
            if then is not None:
                then()
            return None

        return self._tasks.spawn(write(), f"write:{actor_id.hex()}")

    def delete_records(self, actor_ids: Iterable[bytes]) -> None:
        """Delete dead actors' records (evicted from the destroyed cache)."""
        ids = list(actor_ids)
        if ids:
            table = self._tables.actor_table
            self._tasks.spawn(self._quietly(lambda: table.batch_delete(ids)), "evict")

    def delete_specs(self, actor_ids: Iterable[bytes]) -> None:
        """Delete task specs nobody needs (dead or orphaned actors)."""
        ids = list(actor_ids)
        if ids:
            specs = self._tables.actor_task_spec_table
            self._tasks.spawn(self._quietly(lambda: specs.batch_delete(ids)), "drop-specs")

    async def _quietly(self, work: Callable[[], Coroutine[Any, Any, object]]) -> None:
        try:
            await work()
        except GcsHaError as exc:
            log.warning("actor table cleanup failed: %s", exc)
