"""InMemoryStoreClient: the StoreClient over Python dicts, for tests and development.

Same semantics and errors as the durable stores (the contract suite runs against all of
them): checks from `common`, keys in byte order, the job counter kept in JOB_COUNTER
under JOB_COUNTER_KEY. Each method completes without awaiting, so every call is atomic
with respect to the event loop. Nothing survives the process.

Errors: InvalidRequestError (unknown table, empty or oversized key, oversized value).
"""

from __future__ import annotations

from gcs_ha.storage.common import (
    DIGEST_TABLE_ORDER,
    JOB_COUNTER_KEY,
    TableDigest,
    check_key,
    check_prefix,
    check_put,
    check_table,
    decode_job_counter,
    encode_job_counter,
)
from gcs_ha.storage.store_client import JOB_COUNTER_TABLE, TABLES, StoreClient


class InMemoryStoreClient(StoreClient):
    """A StoreClient whose tables are dicts (key -> value) held in this process."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[bytes, bytes]] = {table: {} for table in TABLES}

    def _table(self, table: str) -> dict[bytes, bytes]:
        check_table(table)
        return self._tables[table]

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        """Store `value`; with overwrite=False an existing value is kept. True if new."""
        check_put(table, key, value)
        data = self._tables[table]
        added = key not in data
        if added or overwrite:
            data[bytes(key)] = bytes(value)
        return added

    async def get(self, table: str, key: bytes) -> bytes | None:
        """The value, or None when absent."""
        data = self._table(table)
        check_key(key)
        return data.get(key)

    async def get_all(self, table: str) -> dict[bytes, bytes]:
        """Every key and value of the table (a copy)."""
        return dict(self._table(table))

    async def multi_get(self, table: str, keys: list[bytes]) -> dict[bytes, bytes]:
        """The values of the keys that exist."""
        data = self._table(table)
        for key in keys:
            check_key(key)
        return {key: data[key] for key in keys if key in data}

    async def delete(self, table: str, key: bytes) -> bool:
        """Delete one key; True when it existed."""
        data = self._table(table)
        check_key(key)
        return data.pop(key, None) is not None

    async def batch_delete(self, table: str, keys: list[bytes]) -> int:
        """Delete keys; how many existed (a key listed twice counts once)."""
        data = self._table(table)
        for key in keys:
            check_key(key)
        return sum(data.pop(key, None) is not None for key in keys)

    async def delete_prefix(self, table: str, prefix: bytes) -> int:
        """Delete every key starting with `prefix`; how many."""
        data = self._table(table)
        check_prefix(prefix)
        doomed = [key for key in data if key.startswith(prefix)]
        for key in doomed:
            del data[key]
        return len(doomed)

    async def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        """The keys starting with `prefix`, in byte order."""
        data = self._table(table)
        check_prefix(prefix)
        return sorted(key for key in data if key.startswith(prefix))

    async def exists(self, table: str, key: bytes) -> bool:
        """Whether the key exists."""
        data = self._table(table)
        check_key(key)
        return key in data

    async def next_job_id(self) -> int:
        """Increment the job counter; the first call returns 1."""
        data = self._tables[JOB_COUNTER_TABLE]
        value = decode_job_counter(data.get(JOB_COUNTER_KEY)) + 1
        data[JOB_COUNTER_KEY] = encode_job_counter(value)
        return value

    def digest(self) -> str:
        """sha256 hex over every table, computed like LmdbEnv.digest (equal data, equal
        digest), to compare an in-memory twin with an LMDB replica."""
        digest = TableDigest()
        for table in DIGEST_TABLE_ORDER:
            digest.table(table)
            data = self._tables[table]
            digest.entries((key, data[key]) for key in sorted(data))
        return digest.hexdigest()
