"""Ray-shaped typed tables over any StoreClient: what the GCS managers use.

Mirrors Ray's gcs_table_storage.h: `GcsTable[K, V]` stores protobuf messages of type V
under Ray ids (bytes, K); `GcsTableWithJobId` also answers "every record of job J"
from an in-memory index (job id -> keys), as Ray's does for actors and actor task specs;
`GcsTableStorage` declares every table once, plus Ray's internal KV (`internal_kv`).

Errors: whatever the StoreClient raises (gcs_ha.errors); CorruptDataError when a stored
value does not parse as the table's message type; InvalidRequestError for a key too
short to hold a job id in a GcsTableWithJobId.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar, cast

from google.protobuf.message import DecodeError, Message

from gcs_ha.errors import CorruptDataError, InvalidRequestError
from gcs_ha.proto.ray.common_pb2 import TaskSpec
from gcs_ha.proto.ray.gcs_pb2 import (
    ActorTableData,
    GcsNodeInfo,
    JobTableData,
    PlacementGroupTableData,
    WorkerTableData,
)
from gcs_ha.proto.ray.gcs_service_pb2 import GcsSubscriberCommandBatchRequest
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.store_client import (
    ACTOR_TABLE,
    ACTOR_TASK_SPEC_TABLE,
    JOB_TABLE,
    NODE_TABLE,
    PLACEMENT_GROUP_TABLE,
    SUBSCRIBERS_TABLE,
    WORKERS_TABLE,
    StoreClient,
)

K = TypeVar("K", bound=bytes)
V = TypeVar("V", bound=Message)

# Ray ids end with the 4-byte JobID they belong to (ActorID, PlacementGroupID, TaskID).
JOB_ID_BYTES = 4


class GcsTable(Generic[K, V]):
    """One table of `store` holding messages of type `message_type` under id keys."""

    def __init__(self, store: StoreClient, table: str, message_type: type[V]) -> None:
        self.store = store
        self.table = table
        self.message_type = message_type

    async def put(self, key: K, value: V) -> None:
        """Store `value` under `key` (replacing any previous value)."""
        await self.store.put(self.table, key, value.SerializeToString(deterministic=True))

    async def get(self, key: K) -> V | None:
        """The message under `key`, or None."""
        raw = await self.store.get(self.table, key)
        return None if raw is None else self._parse(key, raw)

    async def get_all(self) -> dict[K, V]:
        """Every record of the table."""
        raw = await self.store.get_all(self.table)
        return {cast(K, key): self._parse(key, value) for key, value in raw.items()}

    async def multi_get(self, keys: Iterable[K]) -> dict[K, V]:
        """The records of the keys that exist."""
        raw = await self.store.multi_get(self.table, list(keys))
        return {cast(K, key): self._parse(key, value) for key, value in raw.items()}

    async def delete(self, key: K) -> bool:
        """Delete one record; True when it existed."""
        return await self.store.delete(self.table, key)

    async def batch_delete(self, keys: Iterable[K]) -> int:
        """Delete records; how many existed."""
        return await self.store.batch_delete(self.table, list(keys))

    def _parse(self, key: bytes, raw: bytes) -> V:
        message = self.message_type()
        try:
            message.ParseFromString(raw)
        except DecodeError as exc:
            raise CorruptDataError(
                f"{self.table}[{key.hex()}] is not a valid {self.message_type.__name__}"
            ) from exc
        return message


class GcsTableWithJobId(GcsTable[K, V]):
    """A GcsTable whose keys end with a job id, with an index job id -> keys.

    The index lives in memory: `load()` rebuilds it from the store at startup (a new
    leader calls it while building its init data). It may list keys that no longer
    exist (a delete whose outcome was unknown), never miss one that does: a put adds its
    key before and again after writing, a delete removes it only once it succeeded.
    Readers filter absent keys through multi_get.
    """

    def __init__(self, store: StoreClient, table: str, message_type: type[V]) -> None:
        super().__init__(store, table, message_type)
        self._index: dict[bytes, set[K]] = {}

    @staticmethod
    def job_id_of(key: bytes) -> bytes:
        """The job id of a key: its last 4 bytes, as for Ray's ActorID."""
        if len(key) < JOB_ID_BYTES:
            raise InvalidRequestError(f"key {key.hex()} is too short to carry a job id")
        return bytes(key[-JOB_ID_BYTES:])

    async def load(self) -> dict[K, V]:
        """Every record; the index is rebuilt from exactly these records."""
        self._index.clear()
        return await self.get_all()

    async def get_all(self) -> dict[K, V]:
        """Every record; their keys are added to the index."""
        records = await super().get_all()
        for key in records:
            self._add(key)
        return records

    async def put(self, key: K, value: V) -> None:
        """Store `value`; the key joins the index of its job."""
        self._add(key)
        await super().put(key, value)
        self._add(key)

    async def delete(self, key: K) -> bool:
        """Delete one record and drop it from the index."""
        existed = await super().delete(key)
        self._discard(key)
        return existed

    async def batch_delete(self, keys: Iterable[K]) -> int:
        """Delete records and drop them from the index."""
        keys = list(keys)
        count = await super().batch_delete(keys)
        for key in keys:
            self._discard(key)
        return count

    def keys_of_job(self, job_id: bytes) -> set[K]:
        """The indexed keys of a job (a copy)."""
        return set(self._index.get(bytes(job_id), ()))

    async def get_by_job_id(self, job_id: bytes) -> dict[K, V]:
        """Every record of `job_id`."""
        keys = self._index.get(bytes(job_id))
        if not keys:
            return {}
        return await self.multi_get(sorted(keys))

    async def delete_by_job_id(self, job_id: bytes) -> int:
        """Delete every record of `job_id`; how many existed."""
        keys = self._index.get(bytes(job_id))
        if not keys:
            return 0
        return await self.batch_delete(sorted(keys))

    def _add(self, key: K) -> None:
        self._index.setdefault(self.job_id_of(key), set()).add(key)

    def _discard(self, key: K) -> None:
        job_id = self.job_id_of(key)
        keys = self._index.get(job_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._index[job_id]


class GcsTableStorage:
    """Every GCS table over one StoreClient, declared once (Ray's GcsTableStorage).

    Keys are Ray ids as bytes: JobID (job_table), ActorID (actor_table,
    actor_task_spec_table; their last 4 bytes are the job id), PlacementGroupID,
    NodeID, WorkerID; subscriber_table: a plane tag (b"c" control, b"o" observability)
    and a subscriber id (gcs_ha.managers.pubsub_manager).
    """

    def __init__(self, store: StoreClient) -> None:
        self.store = store
        self.job_table = GcsTable[bytes, JobTableData](store, JOB_TABLE, JobTableData)
        self.actor_table = GcsTableWithJobId[bytes, ActorTableData](
            store, ACTOR_TABLE, ActorTableData
        )
        self.actor_task_spec_table = GcsTableWithJobId[bytes, TaskSpec](
            store, ACTOR_TASK_SPEC_TABLE, TaskSpec
        )
        self.placement_group_table = GcsTable[bytes, PlacementGroupTableData](
            store, PLACEMENT_GROUP_TABLE, PlacementGroupTableData
        )
        self.node_table = GcsTable[bytes, GcsNodeInfo](store, NODE_TABLE, GcsNodeInfo)
        self.worker_table = GcsTable[bytes, WorkerTableData](store, WORKERS_TABLE, WorkerTableData)
        self.subscriber_table = GcsTable[bytes, GcsSubscriberCommandBatchRequest](
            store, SUBSCRIBERS_TABLE, GcsSubscriberCommandBatchRequest
        )
        self.internal_kv = InternalKv(store)

    async def next_job_id(self) -> int:
        """The next job number (1, 2, ...), from the store's job counter."""
        return await self.store.next_job_id()
