"""ReplicatedStoreClient: the StoreClient whose writes go through Raft.

A write is validated here (so junk never reaches the log), proposed through group commit,
and acknowledged once a majority holds it durably and this replica committed it to LMDB.
Reads are linearizable: a ReadIndex confirmation (read_barrier.py), then the local LMDB.
See DESIGN.md, "The write path" and "Reads (ReadIndex)".

Errors: NotLeaderError (with the leader's GCS address as a hint) from every call on a
replica that is not the serving leader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gcs_ha.consensus import envelope
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.errors import InvalidRequestError, NotLeaderError
from gcs_ha.proto import raft_log_pb2 as pb
from gcs_ha.storage.common import check_key, check_prefix, check_put, check_table
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import StoreClient

# Returns None while this replica serves; else the leader's GCS address hint ("" if unknown).
ServingCheck = Callable[[], str | None]
EnvGetter = Callable[[], LmdbEnv]
ReadConfirmation = Callable[[], Awaitable[None]]


class ReplicatedStoreClient(StoreClient):
    """StoreClient over Raft + LMDB. Use from the replica's event loop."""

    def __init__(
        self,
        proposer: GroupCommitProposer,
        confirm_read: ReadConfirmation,
        env: EnvGetter,
        not_serving: ServingCheck,
        *,
        consistent_reads: bool = True,
        unsafe_local_reads: bool = False,
    ) -> None:
        """`confirm_read()` returns once a read arriving now may be answered from `env()`.
        `unsafe_local_reads` (tests only, gcs_ha.unsafe): reads on any replica, from its
        local LMDB, without the serving check or the confirmation."""
        self._proposer = proposer
        self._confirm_read = confirm_read
        self._env = env
        self._not_serving = not_serving
        self.consistent_reads = consistent_reads
        self.unsafe_local_reads = unsafe_local_reads

    def without_read_barrier(self) -> ReplicatedStoreClient:
        """A view sharing this client's write path whose reads skip the confirmation
        (local LMDB at once). Safe for a serving leader's managers right after promotion,
        whose barrier already applied everything committed before (leadership.py)."""
        return ReplicatedStoreClient(
            self._proposer,
            self._confirm_read,
            self._env,
            self._not_serving,
            consistent_reads=False,
        )

    # -- writes -----------------------------------------------------------------------

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        check_put(table, key, value)
        result = await self._write(envelope.put(table, key, value, overwrite))
        return result.added

    async def delete(self, table: str, key: bytes) -> bool:
        return await self.batch_delete(table, [key]) == 1

    async def batch_delete(self, table: str, keys: list[bytes]) -> int:
        check_table(table)
        for key in keys:
            check_key(key)
        if not keys:
            return 0
        result = await self._write(envelope.delete(table, list(keys)))
        return result.count

    async def delete_prefix(self, table: str, prefix: bytes) -> int:
        check_table(table)
        check_prefix(prefix)
        result = await self._write(envelope.delete_prefix(table, prefix))
        return result.count

    async def next_job_id(self) -> int:
        result = await self._write(envelope.next_job_id())
        return result.job_id

    # -- reads ------------------------------------------------------------------------

    async def get(self, table: str, key: bytes) -> bytes | None:
        check_table(table)
        check_key(key)
        await self._read_barrier()
        with self._env().read() as txn:
            return txn.get(table, key)

    async def get_all(self, table: str) -> dict[bytes, bytes]:
        check_table(table)
        await self._read_barrier()
        with self._env().read() as txn:
            return dict(txn.scan(table))

    async def multi_get(self, table: str, keys: list[bytes]) -> dict[bytes, bytes]:
        check_table(table)
        for key in keys:
            check_key(key)
        await self._read_barrier()
        out: dict[bytes, bytes] = {}
        with self._env().read() as txn:
            for key in keys:
                value = txn.get(table, key)
                if value is not None:
                    out[key] = value
        return out

    async def keys(self, table: str, prefix: bytes = b"") -> list[bytes]:
        check_table(table)
        check_prefix(prefix)
        await self._read_barrier()
        with self._env().read() as txn:
            return [key for key, _ in txn.scan(table, prefix)]

    async def exists(self, table: str, key: bytes) -> bool:
        check_table(table)
        check_key(key)
        await self._read_barrier()
        with self._env().read() as txn:
            return txn.exists(table, key)

    # -- internals --------------------------------------------------------------------

    def _require_serving(self) -> None:
        hint = self._not_serving()
        if hint is not None:
            raise NotLeaderError("this replica is not the serving leader", hint or None)

    async def _write(self, request: pb.Request) -> pb.Result:
        self._require_serving()
        result = await self._proposer.submit(request)
        if result.WhichOneof("value") == "error":
            raise InvalidRequestError(result.error)
        return result

    async def _read_barrier(self) -> None:
        if self.unsafe_local_reads:
            return
        self._require_serving()
        if self.consistent_reads:
            await self._confirm_read()
