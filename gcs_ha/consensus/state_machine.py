"""The replicated state machine: committed log entries applied to LMDB.

Runs in the Raft tick thread only. Deterministic: the same entries in the same order give
byte-identical tables on every replica. Every entry applied in one tick goes into one
LMDB write transaction, committed (unsynced, with the applied index) by `commit()` at the
end of the tick; `sync()` flushes it before the journal is compacted. See DESIGN.md,
"The write path".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gcs_ha.consensus import envelope
from gcs_ha.errors import GcsHaError, InvalidRequestError
from gcs_ha.proto import raft_log_pb2 as pb
from gcs_ha.storage.lmdb_env import LmdbEnv, WriteTxn

logger = logging.getLogger(__name__)

FatalHandler = Callable[[str, BaseException], None]
Observe = Callable[[float], None]


def ignore_duration(_seconds: float) -> None:
    """The default observer: durations not recorded."""
    return None


class LmdbStateMachine:
    """Applies log entries to an `LmdbEnv`.

    A failure to write LMDB is fatal (`on_fatal` is called and must stop the replica):
    a replica that cannot apply an entry must not go on and diverge. So is an entry of a
    format newer than this build reads (envelope.py): the message says to upgrade.
    """

    def __init__(
        self,
        env: LmdbEnv,
        on_fatal: FatalHandler,
        *,
        observe_apply: Observe = ignore_duration,
        observe_commit: Observe = ignore_duration,
    ) -> None:
        """`observe_apply` / `observe_commit` are told how long each apply (one entry)
        and each commit took, in seconds (metrics; timing never changes what is applied)."""
        self._env = env
        self._on_fatal = on_fatal
        self._observe_apply = observe_apply
        self._observe_commit = observe_commit
        self._txn: WriteTxn | None = None
        self._applied = env.applied_index()
        self._newest_format = envelope.newest_version()

    @property
    def env(self) -> LmdbEnv:
        return self._env

    @property
    def applied_index(self) -> int:
        """The last index applied (committed or in the open transaction)."""
        return self._applied

    def apply(self, index: int, data: bytes) -> list[pb.Result] | None:
        """Apply the entry at Raft `index`. Returns one Result per request, or None when
        the entry is already in LMDB (a journal replay after a restart)."""
        if index <= self._applied:
            return None
        started = time.perf_counter()
        try:
            entry = envelope.decode(data, self._newest_format)
            txn = self._open_txn()
            results = [_apply_request(txn, request) for request in entry.requests]
            txn.set_applied_index(index)
        except Exception as exc:  # a replica that cannot apply must stop, not diverge
            self._abort()
            self._on_fatal(f"cannot apply log entry {index}", exc)
            return None
        self._applied = index
        self._observe_apply(time.perf_counter() - started)
        return results

    def sync(self) -> None:
        """Flush every LMDB commit to disk (before a snapshot and a journal compaction)."""
        try:
            self._env.sync()
        except Exception as exc:
            self._on_fatal("cannot sync LMDB", exc)

    def commit(self) -> None:
        """Make everything applied so far visible (one LMDB commit, not synced)."""
        txn, self._txn = self._txn, None
        if txn is None:
            return
        started = time.perf_counter()
        try:
            txn.commit()
        except Exception as exc:
            self._on_fatal("cannot commit applied entries to LMDB", exc)
        self._observe_commit(time.perf_counter() - started)

    def replace_env(self, env: LmdbEnv) -> None:
        """Switch to another environment (after a snapshot was installed)."""
        self._abort()
        self._env = env
        self._applied = env.applied_index()

    def _open_txn(self) -> WriteTxn:
        if self._txn is None:
            self._txn = self._env.begin_write()
        return self._txn

    def _abort(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.abort()
            self._applied = self._env.applied_index()


def _apply_request(txn: WriteTxn, request: pb.Request) -> pb.Result:
    """Apply one request. A request that is invalid on every replica (e.g. an unknown
    table) yields an error result; the rest of the entry still applies."""
    op = request.WhichOneof("op")
    try:
        if op == "put":
            p = request.put
            return pb.Result(added=txn.put(p.table, p.key, p.value, p.overwrite))
        if op == "delete":
            d = request.delete
            return pb.Result(count=sum(1 for key in d.keys if txn.delete(d.table, key)))
        if op == "delete_prefix":
            dp = request.delete_prefix
            return pb.Result(count=txn.delete_prefix(dp.table, dp.prefix))
        if op == "next_job_id":
            return pb.Result(job_id=txn.next_job_id())
        if op == "barrier":
            return pb.Result(done=True)
    except InvalidRequestError as exc:
        return pb.Result(error=str(exc))
    except GcsHaError:
        raise
    raise InvalidRequestError(f"unknown request type {op!r}")
