"""LmdbStoreClient: the StoreClient of one node, durable, over an LmdbEnv. Writes are
group-committed on one writer thread; reads run on the event loop. Design: DESIGN.md,
"LmdbStoreClient: group commit on a writer thread".

Errors: InvalidRequestError (checked before queuing); StorageError / CorruptDataError
when the transaction fails (every write of that batch gets the same exception; nothing
of the batch is applied); StorageError for a write after close(); UnknownOutcomeError
for writes still queued or in flight when the flusher task is cancelled. A caller
cancelled while waiting may still have its write applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from gcs_ha.errors import InvalidRequestError, StorageError, UnknownOutcomeError
from gcs_ha.storage.common import check_key, check_prefix, check_put, check_table
from gcs_ha.storage.lmdb_env import LmdbEnv, WriteTxn
from gcs_ha.storage.store_client import StoreClient

T = TypeVar("T")
_Op = Callable[[WriteTxn], Any]
_Waiter = tuple[_Op, asyncio.Future[Any]]


class _Refused:
    """The outcome of an operation refused inside a batch (the others still apply)."""

    def __init__(self, exc: InvalidRequestError) -> None:
        self.exc = exc


class LmdbStoreClient(StoreClient):
    """A durable single-node StoreClient; close() it when done."""

    def __init__(self, env: LmdbEnv, *, owns_env: bool = False) -> None:
        self._env = env
        self._owns_env = owns_env
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcs-ha-lmdb")
        self._pending: list[_Waiter] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0  # transactions committed (observability: writes / commits = batch)
        self.writes = 0  # write operations committed

    @classmethod
    def open(cls, path: Path, *, sync: bool = True, map_size: int = 8 << 30) -> LmdbStoreClient:
        """Open (or create) the environment at `path`, owned by the client."""
        return cls(LmdbEnv(path, sync=sync, map_size=map_size), owns_env=True)

    @property
    def env(self) -> LmdbEnv:
        """The environment underneath (digest, copies)."""
        return self._env

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        """Store `value`; overwrite=False keeps an existing one. True if newly added."""
        check_put(table, key, value)
        key, value = bytes(key), bytes(value)
        return await self._write(lambda txn: txn.put(table, key, value, overwrite))

    async def get(self, table: str, key: bytes) -> bytes | None:
        """The value, or None."""
        with self._env.read() as txn:
            return txn.get(table, key)

    async def get_all(self, table: str) -> dict[bytes, bytes]:
        """Every key and value of the table."""
        with self._env.read() as txn:
            return dict(txn.scan(table))

    async def multi_get(self, table: str, keys: list[bytes]) -> dict[bytes, bytes]:
        """The values of the keys that exist, read at one state."""
        check_table(table)
        for key in keys:
            check_key(key)
        found: dict[bytes, bytes] = {}
        with self._env.read() as txn:
            for key in keys:
                value = txn.get(table, key)
                if value is not None:
                    found[key] = value
        return found

    async def delete(self, table: str, key: bytes) -> bool:
        """Delete one key; True when it existed."""
        check_table(table)
        check_key(key)
        key = bytes(key)
        return await self._write(lambda txn: txn.delete(table, key))

    async def batch_delete(self, table: str, keys: list[bytes]) -> int:
        """Delete keys in one transaction; how many existed."""
        check_table(table)
        for key in keys:
            check_key(key)
        keys = [bytes(key) for key in keys]
        return await self._write(lambda txn: sum(txn.delete(table, key) for key in keys))

    async def delete_prefix(self, table: str, prefix: bytes) -> int:
        """Delete every key starting with `prefix`; how many."""
        check_table(table)
        check_prefix(prefix)
        prefix = bytes(prefix)
        return await self._write(lambda txn: txn.delete_prefix(table, prefix))

    async def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        """The keys starting with `prefix`, in byte order."""
        with self._env.read() as txn:
            return [key for key, _ in txn.scan(table, prefix)]

    async def exists(self, table: str, key: bytes) -> bool:
        """Whether the key exists."""
        with self._env.read() as txn:
            return txn.exists(table, key)

    async def next_job_id(self) -> int:
        """Increment the job counter; the first call returns 1."""
        return await self._write(lambda txn: txn.next_job_id())

    async def close(self) -> None:
        """Finish queued writes, stop the writer thread, close an owned environment."""
        self._closed = True
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        self._executor.shutdown(wait=True)
        if self._owns_env:
            self._env.close()

    async def _write(self, op: Callable[[WriteTxn], T]) -> T:
        """Queue `op` for the next group commit and wait for its outcome."""
        if self._closed:
            raise StorageError("the LMDB store client is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="gcs-ha-lmdb-flush")
        return cast(T, await future)

    async def _flush(self) -> None:
        """Commit queued operations, a batch per transaction, until the queue is empty."""
        loop = asyncio.get_running_loop()
        batch: list[_Waiter] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                ops = [op for op, _ in batch]
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._commit, ops)
                except Exception as exc:  # the batch was aborted: its waiters get the error
                    _fail(batch, exc)
                else:
                    _resolve(batch, outcomes)
                batch = []
        finally:
            lost = UnknownOutcomeError("the LMDB writer stopped before the write finished")
            _fail(batch + self._pending, lost)
            self._pending = []

    def _commit(self, ops: list[_Op]) -> list[Any]:
        """Writer thread: run `ops` in one transaction and commit it."""
        outcomes: list[Any] = []
        with self._env.write() as txn:
            for op in ops:
                try:
                    outcomes.append(op(txn))
                except InvalidRequestError as exc:
                    outcomes.append(_Refused(exc))
        self.commits += 1
        self.writes += len(ops)
        return outcomes


def _resolve(batch: list[_Waiter], outcomes: list[Any]) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, _Refused):
            future.set_exception(outcome.exc)
        else:
            future.set_result(outcome)


def _fail(waiters: list[_Waiter], exc: BaseException) -> None:
    for _, future in waiters:
        if not future.done():
            future.set_exception(exc)
