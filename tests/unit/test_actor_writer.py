"""ActorWriter: an actor's record is never stored without its creation task.

The record and the spec are two requests of the replicated store. If leadership is lost
between them only a prefix of what was submitted can commit, so the spec must go first:
a record without its spec is loaded by the next leader as a destroyed actor (the owner's
replayed RegisterActor was then answered as a replay of a dead actor, and the actor was
never created).
"""

from __future__ import annotations

import asyncio

from gcs_ha.errors import GcsHaError, NotLeaderError
from gcs_ha.managers.actors.gcs_actor import GcsActor
from gcs_ha.managers.actors.lease_intents import ActorLeaseIntents
from gcs_ha.managers.actors.writer import ActorWriter
from gcs_ha.managers.manager import BackgroundTasks
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import ACTOR_TABLE, ACTOR_TASK_SPEC_TABLE, GcsTableStorage
from gcs_ha.testing.actor_fakes import actor_id, creation_spec


class CutStore(InMemoryStoreClient):
    """Accepts the first `accept` puts, then refuses every write as a demoted leader
    would; records the order in which puts were submitted."""

    def __init__(self, accept: int) -> None:
        super().__init__()
        self.accept = accept
        self.submitted: list[str] = []

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        self.submitted.append(table)
        if len(self.submitted) > self.accept:
            raise NotLeaderError("this replica is not the serving leader")
        return await super().put(table, key, value, overwrite)


async def write(store: CutStore) -> GcsHaError | None:
    tables = GcsTableStorage(store)
    writer = ActorWriter(tables, ActorLeaseIntents(InternalKv(store)), BackgroundTasks("t"))
    return await writer.write(GcsActor.from_task_spec(creation_spec(1)), spec=True)


def test_the_spec_is_submitted_before_the_record() -> None:
    store = CutStore(accept=10)
    assert asyncio.run(write(store)) is None
    assert store.submitted == [ACTOR_TASK_SPEC_TABLE, ACTOR_TABLE]


def test_a_write_cut_after_its_first_request_leaves_no_record_without_its_spec() -> None:
    store = CutStore(accept=1)
    error = asyncio.run(write(store))
    assert isinstance(error, NotLeaderError)

    async def stored() -> tuple[bool, bool]:
        tables = GcsTableStorage(store)
        spec = await tables.actor_task_spec_table.get(actor_id(1))
        record = await tables.actor_table.get(actor_id(1))
        return spec is not None, record is not None

    assert asyncio.run(stored()) == (True, False)  # the next leader deletes the spec
