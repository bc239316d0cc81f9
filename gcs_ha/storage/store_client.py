"""The StoreClient protocol: the one storage interface the GCS tables use.

Shaped like Ray's `StoreClient` (src/ray/gcs/store_client/store_client.h): a table is
named by a string, keys and values are bytes (values are serialized protobufs).
Every method is a coroutine: the replicated implementation completes a write only
after a majority has it and it is applied locally.

Implementations: `InMemoryStoreClient` (tests, dev), `LmdbStoreClient` (one node,
durable), `ReplicatedStoreClient` (Raft + LMDB, gcs_ha.consensus).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

# The tables of Ray's GCS (Ray's `TablePrefix` names), plus gcs-ha's own.
JOB_TABLE = "JOB"
ACTOR_TABLE = "ACTOR"
ACTOR_TASK_SPEC_TABLE = "ACTOR_TASK_SPEC"
PLACEMENT_GROUP_TABLE = "PLACEMENT_GROUP"
NODE_TABLE = "NODE"
WORKERS_TABLE = "WORKERS"
KV_TABLE = "KV"
JOB_COUNTER_TABLE = "JOB_COUNTER"
# gcs-ha's own metadata: replica membership (node id -> addresses), cluster identity.
MEMBERS_TABLE = "GCS_HA_MEMBERS"
META_TABLE = "GCS_HA_META"
# gcs-ha's own: pubsub subscriptions to every key of a channel, kept across leaders.
SUBSCRIBERS_TABLE = "GCS_HA_SUBSCRIBERS"
# gcs-ha's own: chunks of internal-KV values larger than one entry (storage/large_values.py).
CHUNKS_TABLE = "GCS_HA_CHUNKS"

TABLES: frozenset[str] = frozenset(
    {
        JOB_TABLE,
        ACTOR_TABLE,
        ACTOR_TASK_SPEC_TABLE,
        PLACEMENT_GROUP_TABLE,
        NODE_TABLE,
        WORKERS_TABLE,
        KV_TABLE,
        JOB_COUNTER_TABLE,
        MEMBERS_TABLE,
        META_TABLE,
        SUBSCRIBERS_TABLE,
        CHUNKS_TABLE,
    }
)

# Keys longer than this and values larger than this are refused with InvalidRequestError.
# Values: a Raft entry is pickled and encrypted once per follower in the leader's Raft
# thread; measured here, 16 MiB keeps that under the 0.3 s election timeout with a
# password, 20 MiB does not (docs/pysyncobj-patches.md). Ray's internal KV takes values
# up to 512 MiB by storing larger ones in chunks (gcs_ha/storage/large_values.py).
MAX_KEY_BYTES = 64 * 1024
MAX_VALUE_BYTES = 16 * 1024 * 1024


@runtime_checkable
class StoreClient(Protocol):
    """Async key-value tables. Errors: `gcs_ha.errors` (InvalidRequestError for an unknown
    table or oversized key/value, NotLeaderError/UnavailableError/UnknownOutcomeError from
    the replicated store, StorageError when the disk fails)."""

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        """Store `value`; with overwrite=False an existing value is kept.
        Returns True when the key was newly added."""
        ...

    async def get(self, table: str, key: bytes) -> bytes | None:
        """The value, or None when the key is absent."""
        ...

    async def get_all(self, table: str) -> dict[bytes, bytes]:
        """Every key and value of the table."""
        ...

    async def multi_get(self, table: str, keys: list[bytes]) -> dict[bytes, bytes]:
        """The values of the keys that exist (absent keys are left out)."""
        ...

    async def delete(self, table: str, key: bytes) -> bool:
        """Delete one key; True when it existed."""
        ...

    async def batch_delete(self, table: str, keys: list[bytes]) -> int:
        """Delete keys; returns how many existed."""
        ...

    async def delete_prefix(self, table: str, prefix: bytes) -> int:
        """Delete every key that starts with `prefix`; returns how many."""
        ...

    async def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        """The keys that start with `prefix`, in byte order."""
        ...

    async def exists(self, table: str, key: bytes) -> bool:
        """Whether the key exists."""
        ...

    async def next_job_id(self) -> int:
        """Increment the job counter; returns the new value (the first call returns 1)."""
        ...
