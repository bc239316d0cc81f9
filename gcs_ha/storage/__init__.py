"""gcs-ha storage: the StoreClient protocol, its in-memory and LMDB backends, and Ray's
typed GCS tables over any StoreClient. Knows nothing of Raft or gRPC; see DESIGN.md."""

from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.lmdb_env import LmdbEnv, ReadTxn, WriteTxn
from gcs_ha.storage.lmdb_store import LmdbStoreClient
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import (
    ACTOR_TABLE,
    ACTOR_TASK_SPEC_TABLE,
    CHUNKS_TABLE,
    JOB_COUNTER_TABLE,
    JOB_TABLE,
    KV_TABLE,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    MEMBERS_TABLE,
    META_TABLE,
    NODE_TABLE,
    PLACEMENT_GROUP_TABLE,
    SUBSCRIBERS_TABLE,
    TABLES,
    WORKERS_TABLE,
    StoreClient,
)
from gcs_ha.storage.tables import GcsTable, GcsTableStorage, GcsTableWithJobId

__all__ = [
    "ACTOR_TABLE",
    "ACTOR_TASK_SPEC_TABLE",
    "CHUNKS_TABLE",
    "JOB_COUNTER_TABLE",
    "JOB_TABLE",
    "KV_TABLE",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MEMBERS_TABLE",
    "META_TABLE",
    "NODE_TABLE",
    "PLACEMENT_GROUP_TABLE",
    "SUBSCRIBERS_TABLE",
    "TABLES",
    "WORKERS_TABLE",
    "GcsTable",
    "GcsTableStorage",
    "GcsTableWithJobId",
    "InMemoryStoreClient",
    "InternalKv",
    "LmdbEnv",
    "LmdbStoreClient",
    "ReadTxn",
    "StoreClient",
    "WriteTxn",
]
