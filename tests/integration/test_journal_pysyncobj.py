"""Real pysyncobj nodes on DurableJournal: replicate, compact, stop all, restart from the journals.

Three SyncObj nodes run in this process (127.0.0.1:23040-23042). SyncObj gets a DurableJournal
through SyncObjConf.journalFile; the test patches pysyncobj's `createJournal` to hand that object
back, which is what gcs-ha's patch layer does in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pysyncobj.syncobj as syncobj_module
import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict

from gcs_ha.consensus.journal import DurableJournal

ADDRESSES = [f"127.0.0.1:{port}" for port in (23040, 23041, 23042)]
KEYS = 40
WAIT_S = 30.0


@pytest.fixture(autouse=True)
def journal_objects_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    original = syncobj_module.createJournal

    def create_journal(journal_file: Any = None) -> Any:
        if isinstance(journal_file, DurableJournal):
            return journal_file
        return original(journal_file)

    monkeypatch.setattr(syncobj_module, "createJournal", create_journal)


class Node:
    """One SyncObj with a replicated dict and its DurableJournal."""

    def __init__(self, index: int, data_dir: Path) -> None:
        data_dir.mkdir(exist_ok=True)
        self.journal = DurableJournal(data_dir / "raft.journal")
        self.kv = ReplDict()
        conf = SyncObjConf(
            journalFile=self.journal,
            fullDumpFile=str(data_dir / "raft.dump"),
            useFork=False,
            password="integration-secret",
            appendEntriesUseBatch=False,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.6,
            appendEntriesPeriod=0.05,
            autoTickPeriod=0.01,
            connectionTimeout=1e9,
            connectionRetryTime=0.5,
            logCompactionMinEntries=10**9,
            logCompactionMinTime=10**9,
        )
        others = [a for i, a in enumerate(ADDRESSES) if i != index]
        self.obj = SyncObj(ADDRESSES[index], others, conf, consumers=[self.kv])

    def destroy(self) -> None:
        self.obj.destroy_synchronous()
        assert not self.obj.tick_thread_alive()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def has_leader(nodes: list[Node]) -> bool:
    leaders = {str(n.obj._getLeader()) for n in nodes}
    return len(leaders) == 1 and leaders != {"None"}


def all_have(nodes: list[Node], expected: dict[str, int]) -> bool:
    return all(all(n.kv.get(k) == v for k, v in expected.items()) for n in nodes)


@pytest.fixture
def cluster_dirs(tmp_path: Path) -> list[Path]:
    return [tmp_path / f"n{i}" for i in range(len(ADDRESSES))]


@pytest.fixture
def running(cluster_dirs: list[Path]) -> Iterator[list[list[Node]]]:
    """Holds every node started by the test; destroys them all at the end."""
    started: list[list[Node]] = []
    yield started
    for generation in started:
        for node in generation:
            node.destroy()


def start(cluster_dirs: list[Path], running: list[list[Node]]) -> list[Node]:
    nodes: list[Node] = []
    running.append(nodes)
    for i, d in enumerate(cluster_dirs):
        nodes.append(Node(i, d))
    return nodes


def test_replicate_compact_restart_from_journals(
    cluster_dirs: list[Path], running: list[list[Node]]
) -> None:
    nodes = start(cluster_dirs, running)
    wait_for(lambda: has_leader(nodes), "a leader")
    expected = {f"key-{i}": i for i in range(KEYS)}
    for i, (key, value) in enumerate(expected.items()):
        nodes[i % 3].kv.set(key, value, sync=True, timeout=10)  # followers forward
    wait_for(lambda: all_have(nodes, expected), "every write applied on every node")

    compacted = nodes[0]
    compacted.obj.forceLogCompaction()
    wait_for(lambda: compacted.journal[0][1] > 1, "log compaction on node 0")
    first_after_compaction = compacted.journal[0][1]

    before = [
        (n.obj._getTerm(), n.journal.getCurrentTerm(), n.journal.getVotedForNodeId(), n.journal[:])
        for n in nodes
    ]
    assert all(term >= 1 and stored == term for term, stored, _, _ in before)
    for node in nodes:
        node.destroy()
    running.remove(nodes)

    reopened = [DurableJournal(d / "raft.journal") for d in cluster_dirs]
    for journal, (term, _, voted, log) in zip(reopened, before, strict=True):
        assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (term, voted)
        assert journal[:] == log
        journal.close()
    assert before[0][3][0][1] == first_after_compaction

    restarted = start(cluster_dirs, running)
    wait_for(lambda: all_have(restarted, expected), "state rebuilt from journals")
    wait_for(lambda: has_leader(restarted), "a leader after restart")
    restarted[1].kv.set("after-restart", 1, sync=True, timeout=10)
    wait_for(lambda: all_have(restarted, {"after-restart": 1}), "a write after restart")
    assert all(n.obj._getTerm() >= b[0] for n, b in zip(restarted, before, strict=True))
