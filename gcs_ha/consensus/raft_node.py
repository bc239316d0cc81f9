"""The Raft node: pysyncobj's SyncObj, bridged to the replica's asyncio loop.

pysyncobj runs everything (network, elections, apply, callbacks) in one tick thread.
This module keeps that thread's work short and hands results to the loop:

- `propose()` (loop thread) queues a log entry; pysyncobj forwards it to the leader
  when this node follows.
- Apply callbacks fire in the tick thread before the tick's LMDB commit; they are
  parked and delivered to the loop only after `LmdbStateMachine.commit()` ran at the
  end of the tick (so an acknowledged write is durable and readable).
- Role changes are delivered to the loop in order.
- A status snapshot is copied in the tick thread (pysyncobj's dicts are not safe to
  read from another thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import GcsHaError, NotLeaderError, UnavailableError, UnknownOutcomeError
from gcs_ha.proto import raft_log_pb2 as pb

logger = logging.getLogger(__name__)

ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
STATUS_PERIOD_S = 0.05

Done = Callable[[Any, GcsHaError | None], None]
StateChanged = Callable[[int, int, int], None]  # (old state, new state, term), on the loop


@dataclass(frozen=True)
class RaftStatus:
    """A consistent copy of the node's Raft state, taken in the tick thread."""

    state: int = 0
    term: int = 0
    leader: str | None = None
    commit_index: int = 0
    last_applied: int = 0
    log_length: int = 0
    last_log_index: int = 0
    has_quorum: bool = False
    self_address: str = ""
    peers: tuple[str, ...] = ()
    match_index: dict[str, int] = field(default_factory=dict)
    connected: frozenset[str] = frozenset()
    taken_at: float = 0.0


class _GcsSyncObj(ps.SyncObj):  # type: ignore[misc]
    """SyncObj with one replicated method. Keep it free of properties: pysyncobj's
    constructor inspects every attribute."""

    def __init__(self, self_address: str, peers: list[str], conf: Any, sm: LmdbStateMachine):
        self._gcs_sm = sm
        super().__init__(self_address, peers, conf)

    @ps.replicated  # type: ignore[untyped-decorator]
    def apply_entry(self, data: bytes) -> list[pb.Result] | None:
        return self._gcs_sm.apply(self.raftLastApplied + 1, data)


def error_for(reason: int) -> GcsHaError:
    """The gcs-ha error for a pysyncobj FAIL_REASON."""
    fr = ps.FAIL_REASON
    if reason == fr.QUEUE_FULL:
        return UnavailableError("the Raft queue is full; retry")
    if reason in (fr.MISSING_LEADER, fr.NOT_LEADER):
        return NotLeaderError("no leader accepted the entry")
    if reason == fr.REQUEST_DENIED:
        return UnavailableError(
            "the request was denied (another membership change or a "
            "new leader still settling); retry"
        )
    return UnknownOutcomeError(f"the outcome of the entry is unknown (reason {reason})")


class RaftNode:
    """Owns one SyncObj. Construct and call `start()` from the loop thread; the SyncObj's
    tick thread lives as long as that thread."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        sm: LmdbStateMachine,
        self_address: str,
        peers: list[str],
        conf_factory: Callable[[Callable[[int, int], None]], Any],
        on_state_changed: StateChanged,
        journal_failure: Callable[[], str | None],
        on_fatal: Callable[[str, BaseException], None],
    ) -> None:
        self._loop = loop
        self._sm = sm
        self._self_address = self_address
        self._peers = peers
        self._conf_factory = conf_factory
        self._on_state_changed = on_state_changed
        self._journal_failure = journal_failure
        self._on_fatal = on_fatal
        self._parked: list[tuple[Done, Any, int]] = []
        self._parked_lock = threading.Lock()
        self._obj: _GcsSyncObj | None = None
        self._status = RaftStatus()
        self._status_due = 0.0

    def start(self) -> None:
        conf = self._conf_factory(self._state_changed_in_tick)
        self._obj = _GcsSyncObj(self._self_address, self._peers, conf, self._sm)
        self._obj.addOnTickCallback(self._after_tick)

    def stop(self) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.destroy_synchronous()
            self._sm.commit()

    @property
    def status(self) -> RaftStatus:
        return self._status

    def is_leader(self) -> bool:
        obj = self._obj
        return obj is not None and bool(obj._isLeader())

    def term(self) -> int:
        obj = self._obj
        return 0 if obj is None else int(obj.raftCurrentTerm)

    def propose(self, data: bytes, done: Done) -> None:
        """Append `data` as a log entry; `done(results, error)` runs on the loop."""
        self._require().apply_entry(data, callback=self._parker(done))

    def add_node(self, address: str, done: Done) -> None:
        self._require().addNodeToCluster(address, callback=self._parker(done))

    def remove_node(self, address: str, done: Done) -> None:
        self._require().removeNodeFromCluster(address, callback=self._parker(done))

    def transfer_leadership(self, address: str | None, done: Done) -> None:
        self._require().transferLeadership(address, callback=self._parker(done))

    def force_compaction(self) -> None:
        self._require().forceLogCompaction()

    # -- tick thread ------------------------------------------------------------------

    def _parker(self, done: Done) -> Callable[[Any, int], None]:
        def park(result: Any, reason: int) -> None:
            with self._parked_lock:
                self._parked.append((done, result, reason))

        return park

    def _after_tick(self) -> None:
        """End of every tick: make applied entries durable, then release their acks."""
        failure = self._journal_failure()
        if failure is not None and self._obj is not None:
            self._on_fatal("the Raft journal failed", OSError(failure))
            return
        self._sm.commit()
        with self._parked_lock:
            parked, self._parked = self._parked, []
        if parked:
            self._loop.call_soon_threadsafe(_deliver, parked)
        now = time.monotonic()
        if now >= self._status_due:
            self._status_due = now + STATUS_PERIOD_S
            self._status = self._snapshot_status(now)

    def _state_changed_in_tick(self, old: int, new: int) -> None:
        term = self.term()
        self._status = self._snapshot_status(time.monotonic())
        self._loop.call_soon_threadsafe(self._on_state_changed, old, new, term)

    def _snapshot_status(self, now: float) -> RaftStatus:
        obj = self._obj
        if obj is None:
            return self._status
        raw = obj.getStatus()
        leader = raw.get("leader")
        peers = tuple(sorted(str(n.id) for n in obj.otherNodes))
        match = {
            key[len("match_idx_server_") :]: int(value)
            for key, value in raw.items()
            if key.startswith("match_idx_server_")
        }
        connected = frozenset(
            key[len("partner_node_status_server_") :]
            for key, value in raw.items()
            if key.startswith("partner_node_status_server_") and value == 2
        )
        return RaftStatus(
            state=int(raw["state"]),
            term=int(raw["raft_term"]),
            leader=None if leader is None else str(leader.id),
            commit_index=int(raw["commit_idx"]),
            last_applied=int(raw["last_applied"]),
            log_length=int(raw["log_len"]),
            last_log_index=int(obj._SyncObj__raftLog[-1][1]),
            has_quorum=bool(raw["has_quorum"]),
            self_address=self._self_address,
            peers=peers,
            match_index=match,
            connected=connected,
            taken_at=now,
        )

    def _require(self) -> _GcsSyncObj:
        if self._obj is None:
            raise UnavailableError("the Raft node is not running")
        return self._obj


def _deliver(parked: list[tuple[Done, Any, int]]) -> None:
    """On the loop: hand each parked callback its result or error."""
    for done, result, reason in parked:
        try:
            if reason == ps.FAIL_REASON.SUCCESS:
                done(result, None)
            else:
                done(None, error_for(reason))
        except Exception:
            logger.exception("a Raft completion callback failed")
