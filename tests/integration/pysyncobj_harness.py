"""In-process pysyncobj clusters for the patch-layer tests.

`ListJournal` is the simulator's in-memory journal (raft_sim.MemoryJournal), injected
through `SyncObjConf.journalFile`; it also records what the durability tests and the B2
test need (flushes, truncations below an acknowledged index, commit-index updates).
`Counter` is a SyncObj with one replicated method. Ports come from the 21000-21999 range
given to these tests.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gcs_ha.consensus._pysyncobj import BATCH_SIZE_BYTES, SyncObj, SyncObjConf, replicated
from gcs_ha.testing.raft_sim import MemoryJournal

_ports = itertools.count(21000)
_ports_lock = threading.Lock()


def free_addresses(n: int) -> list[str]:
    """n fresh 127.0.0.1 addresses in 21000-21999 (never reused within one run)."""
    with _ports_lock:
        ports = [next(_ports) for _ in range(n)]
    if ports[-1] > 21999:
        raise RuntimeError("out of test ports")
    return [f"127.0.0.1:{p}" for p in ports]


class ListJournal(MemoryJournal):
    """The simulator's in-memory journal (gcs_ha/testing/raft_sim.py), with more
    instrumentation for these TCP tests.

    `events` (when `record` is set) holds ("flush", last index) and ("commit", index) in
    order. `acked` is the last index at the latest flush: pysyncobj (patched) flushes right
    before it acknowledges, so it is the highest index this node may have acknowledged.
    `bad_truncations` counts deleteEntriesFrom calls that cut the log below `acked`.
    """

    def __init__(self, entries: Iterable[tuple[bytes, int, int]] = (), term: int = 0) -> None:
        super().__init__()
        self.entries.extend(entries)
        self.term = term
        self.acked = 0
        self.truncations = 0
        self.bad_truncations = 0
        self.deepest_cut = 0
        self.record = False
        self.events: list[tuple[str, int]] = []

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom < len(self.entries):
            self.truncations += 1
            new_last = self.entries[entryFrom - 1][1] if entryFrom > 0 else 0
            if new_last < self.acked:
                self.bad_truncations += 1
                self.deepest_cut = max(self.deepest_cut, self.acked - new_last)
        super().deleteEntriesFrom(entryFrom)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        if self.record and raftCommitIndex != self.commit_index:
            self.events.append(("commit", raftCommitIndex))
        super().setRaftCommitIndex(raftCommitIndex)

    def flush(self) -> None:
        super().flush()
        self.acked = max(self.acked, self.flushed)
        if self.record:
            self.events.append(("flush", self.flushed))

    def snapshot(self) -> list[tuple[bytes, int, int]]:
        """A copy of the entries (taken from another thread: list() is atomic enough)."""
        return list(self.entries)


class Counter(SyncObj):  # type: ignore[misc]
    """A SyncObj whose state is a list of the values it applied."""

    def __init__(self, addr: str, others: list[str], conf: Any, **kwargs: Any) -> None:
        self.values: list[Any] = []
        super().__init__(addr, others, conf, **kwargs)

    @replicated  # type: ignore[untyped-decorator]
    def put(self, value: Any) -> int:
        self.values.append(value)
        return len(self.values)


def base_conf(**overrides: Any) -> Any:
    """Fast in-process settings (our timing and link fix); tests override the rest."""
    settings: dict[str, Any] = {
        "appendEntriesUseBatch": False,
        "raftMinTimeout": 0.3,
        "raftMaxTimeout": 0.6,
        "appendEntriesPeriod": 0.05,
        "autoTickPeriod": 0.01,
        "connectionTimeout": 1e9,
        "connectionRetryTime": 0.5,
        "leaderFallbackTimeout": 1.5,
        "commandsWaitLeader": False,
        "useFork": False,
        "appendEntriesBatchSizeBytes": BATCH_SIZE_BYTES,
    }
    settings.update(overrides)
    return SyncObjConf(**settings)


class Cluster:
    """Starts SyncObjs and destroys every one of them on exit (no leaked tick threads)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []

    def start(
        self, cls: Callable[..., Any], addr: str, others: list[str], conf: Any, **kw: Any
    ) -> Any:
        node = cls(addr, others, conf, **kw)
        self.nodes.append(node)
        return node

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.destroy_synchronous()


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy (returned) or `timeout` passes (returns falsy)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def leader_of(nodes: list[Any]) -> Any:
    """The node that believes it leads, or None."""
    leaders = [n for n in nodes if n._isLeader()]
    return leaders[0] if len(leaders) == 1 else None
