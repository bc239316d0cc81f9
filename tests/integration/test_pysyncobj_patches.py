"""Each pysyncobj patch of gcs_ha.consensus._pysyncobj, shown with its bug and without.

Clusters are real pysyncobj nodes in this process, on 127.0.0.1:21000-21999. A test that
switches a patch off shows the bug (so it is not vacuous); with the patch on, it is gone.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import pickle
import socket
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pysyncobj.serializer
import pytest
from pysyncobj.transport import TCPTransport
from pysyncobj_harness import (
    Cluster,
    Counter,
    ListJournal,
    base_conf,
    free_addresses,
    leader_of,
    wait_for,
)

from gcs_ha.consensus import _pysyncobj as P
from gcs_ha.consensus.config import RaftTiming
from gcs_ha.consensus.snapshotter import Snapshotter
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import ConfigError, InvalidRequestError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE

# ----------------------------------------------------------------------------- helpers


def start_cluster(cluster: Cluster, n: int, node_class: Any = Counter, **conf: Any) -> list[Any]:
    """n Counter nodes; conf values that are lists are given one element per node."""
    addrs = free_addresses(n)
    nodes = []
    for i, addr in enumerate(addrs):
        kw = {k: (v[i] if isinstance(v, list) else v) for k, v in conf.items()}
        transport = kw.pop("transportClass", None)
        extra = {"transportClass": transport} if transport else {}
        others = [a for a in addrs if a != addr]
        nodes.append(cluster.start(node_class, addr, others, base_conf(**kw), **extra))
    assert wait_for(lambda: leader_of(nodes), 10), "no leader elected"
    return nodes


def start_single(cluster: Cluster, addr: str | None = None, **conf: Any) -> Any:
    """A one-node cluster, returned once it leads itself."""
    node = cluster.start(Counter, addr or free_addresses(1)[0], [], base_conf(**conf))
    assert wait_for(node._isLeader, 10), "single node did not elect itself"
    return node


def command_for(value: Any) -> bytes:
    """The log command a sync Counter.put(value) creates (method id 0, protocol 5; pysyncobj
    pickles the kwargs dict after popping sync/timeout from it, hence the empty dict)."""
    return b"\x00" + pickle.dumps((0, (value,), {}), 5)


def raw_exchange(addr: str, payload: bytes, wait: float) -> bool:
    """Send raw bytes to a node's Raft port; True if the node closed the connection."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(payload)
        sock.settimeout(wait)
        return closed(sock)


def closed(sock: socket.socket) -> bool:
    """Whether the peer closed `sock` (within the socket's timeout)."""
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


class _Exploit:
    """Unpickling this runs code that creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def frame(obj: Any) -> bytes:
    data = zlib.compress(pickle.dumps(obj, protocol=2))
    return struct.pack("i", len(data)) + data


def run_in_tick(node: Any, fn: Any, timeout: float = 5.0) -> Any:
    """Run fn() once in node's tick thread (where pysyncobj expects it) and return its result."""
    result: list[Any] = []
    done = threading.Event()

    def hook() -> None:
        if not done.is_set():
            result.append(fn())
            done.set()

    node.addOnTickCallback(hook)
    try:
        assert done.wait(timeout)
    finally:
        node.removeOnTickCallback(hook)
    return result[0]


def tick_errors(caplog: pytest.LogCaptureFixture, exc_type: type) -> int:
    return sum(
        1
        for r in caplog.records
        if "failed _onTick" in r.getMessage() and r.exc_info and isinstance(r.exc_info[1], exc_type)
    )


# ----------------------------------------------------------------------------- layer


def test_apply_patches_is_idempotent() -> None:
    before = (P.SyncObj._onTick, P.SyncObj.__init__, P.SyncObj._applyCommand)
    P.apply_patches()
    P.apply_patches()
    assert (P.SyncObj._onTick, P.SyncObj.__init__, P.SyncObj._applyCommand) == before
    with pytest.raises(ValueError), P.patch_enabled("no_such_patch", False):
        pass


def test_make_conf_is_our_recommended_settings() -> None:
    journal = ListJournal()
    conf = P.make_conf(bind_address="127.0.0.1:21999", password=b"s3cret", journal=journal)
    assert conf.bindAddress == "127.0.0.1:21999"
    assert conf.journalFile is journal
    assert conf.appendEntriesUseBatch is False
    assert conf.appendEntriesBatchSizeBytes == 2 * P.MAX_ENTRY_BYTES
    assert conf.connectionTimeout >= 1e6 and conf.connectionRetryTime == 0.5
    assert conf.tcp_keepalive == P.TCP_KEEPALIVE
    assert (conf.raftMinTimeout, conf.raftMaxTimeout, conf.appendEntriesPeriod) == (0.3, 0.6, 0.05)
    assert conf.leaderFallbackTimeout == 0.6 and conf.autoTickPeriod == 0.01
    assert conf.dynamicMembershipChange and not conf.commandsWaitLeader
    assert 2 * conf.appendEntriesBatchSizeBytes < P.MAX_FRAME_BYTES


def test_make_conf_refuses_bad_input() -> None:
    with pytest.raises(ConfigError):
        P.make_conf(bind_address="127.0.0.1:21999", password=None)
    assert P.make_conf(bind_address="127.0.0.1:21999", password=None, insecure=True)
    with pytest.raises(ConfigError):
        P.make_conf(bind_address="21999", password="x")
    with pytest.raises(ConfigError):  # election timeout must exceed 3 heartbeats
        P.make_conf(bind_address="h:1", password="x", timing=RaftTiming(election_min_s=0.1))


def test_journal_object_is_injected_and_refused_without_the_patch() -> None:
    addr = free_addresses(1)[0]
    journal = ListJournal()
    with Cluster() as cluster:
        node = start_single(cluster, addr, journalFile=journal)
        assert node.put(b"v", sync=True, timeout=5) == 1
        assert journal[-1][0] == command_for(b"v")
    with P.patch_enabled("journal_injection", False), pytest.raises(TypeError):
        Counter(free_addresses(1)[0], [], base_conf(journalFile=ListJournal()))


# ----------------------------------------------------------------------------- pickle


@pytest.mark.parametrize("protocol5", [True, False])
def test_pickle5_does_not_inflate_binary_values(protocol5: bool) -> None:
    value = os.urandom(2**20)
    journal = ListJournal()
    with P.patch_enabled("pickle5", protocol5), Cluster() as cluster:
        node = start_single(cluster, journalFile=journal)
        node.put(value, sync=True, timeout=10)
        assert node.values == [value]
    inflation = len(journal[-1][0]) / len(value)
    assert (inflation < 1.001) if protocol5 else (inflation > 1.4)


def test_restricted_loads_allows_nodes_and_refuses_code(tmp_path: Path) -> None:
    node = P.TCPNode("127.0.0.1:21000")
    assert P.restricted_loads(pickle.dumps(["add", node.id, node], 2))[2] == node
    assert P.restricted_loads(pickle.dumps({b"x", 1}, 2)) == {b"x", 1}
    with pytest.raises(pickle.UnpicklingError):
        P.restricted_loads(pickle.dumps(_Exploit(tmp_path / "marker")))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_crafted_pickle_from_the_network_never_runs(tmp_path: Path, password: str | None) -> None:
    marker = tmp_path / "marker"
    addr = free_addresses(1)[0]
    with Cluster() as cluster:
        node = start_single(cluster, addr, password=password)
        assert node.put(1, sync=True, timeout=5) == 1
        assert raw_exchange(addr, frame(_Exploit(marker)), wait=5), "node kept the connection"
        assert not marker.exists()
        assert node.put(2, sync=True, timeout=5) == 2  # still serving
        if password is None:  # the bug, with the allow-list switched off
            with P.patch_enabled("safe_unpickle", False):
                raw_exchange(addr, frame(_Exploit(marker)), wait=0.2)
                assert wait_for(marker.exists, 5)


def test_oversized_frame_is_disconnected_before_it_is_buffered() -> None:
    addr = free_addresses(1)[0]
    header = struct.pack("i", 2**31 - 1) + b"x" * 4096
    with Cluster() as cluster:
        node = start_single(cluster, addr)
        assert node.put(1, sync=True, timeout=5) == 1
        assert raw_exchange(addr, header, wait=5)
        assert raw_exchange(addr, struct.pack("i", -5) + b"x" * 16, wait=5)
        with P.patch_enabled("frame_limit", False):  # the bug: it waits for 2 GiB
            assert not raw_exchange(addr, header, wait=0.5)
        assert node.put(2, sync=True, timeout=5) == 2


def test_frames_are_not_compressed() -> None:
    data = os.urandom(4096)
    assert len(P._ZlibShim.compress(data, 3)) > len(data)  # level 0: stored, not deflated
    assert P._ZlibShim.decompress(zlib.compress(data, 3)) == data
    with pytest.raises(ValueError):  # truncated stream
        P._ZlibShim.decompress(zlib.compress(data, 0)[:-10])


# ----------------------------------------------------------------------------- B2


def pipelined_load(leader: Any, count: int, window: int) -> None:
    """count puts with at most `window` unanswered callbacks."""
    slots = threading.Semaphore(window)
    done = threading.Semaphore(0)

    def callback(result: Any, error: int) -> None:
        slots.release()
        done.release()

    for i in range(count):
        slots.acquire()
        leader.put(i, callback=callback)
    for _ in range(count):
        assert done.acquire(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("fixed", [True, False])
def test_b2_followers_never_drop_acknowledged_entries(fixed: bool) -> None:
    journals = [ListJournal() for _ in range(3)]
    with P.patch_enabled("b2_monotonic_next", fixed), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, journalFile=journals, logCompactionMinEntries=10**6)
        leader = leader_of(nodes)
        pipelined_load(leader, 20_000, 1000)
        assert {n.raftCurrentTerm for n in nodes} == {leader.raftCurrentTerm}  # no election
    followers = [j for n, j in zip(nodes, journals, strict=True) if n is not leader]
    bad = sum(j.bad_truncations for j in followers)
    if fixed:
        assert bad == 0
        assert all(j.truncations == 0 for j in followers)
    else:
        assert bad > 0  # measured 12-40 per follower per run


# ----------------------------------------------------------------------------- B1


def divergent_journals() -> tuple[list[tuple[bytes, int, int]], list[tuple[bytes, int, int]]]:
    """(ahead, behind): both share 1..100 (term 1); ahead has 3000 term-3 entries after
    that, behind has 30 term-2 entries (a deposed leader's uncommitted suffix)."""
    shared = [(b"\x01", 1, 0)] + [
        (command_for(b"s%04d" % i + b"s" * 120), i, 1) for i in range(2, 101)
    ]
    ahead = shared + [(command_for(b"a%04d" % i + b"a" * 120), i, 3) for i in range(101, 3101)]
    behind = shared + [(command_for(b"b%04d" % i + b"b" * 120), i, 2) for i in range(101, 131)]
    return ahead, behind


@pytest.mark.slow
@pytest.mark.parametrize("fixed", [True, False])
def test_b1_restarted_follower_with_divergent_suffix_converges(fixed: bool) -> None:
    ahead, behind = divergent_journals()
    journals = [ListJournal(ahead, term=3), ListJournal(ahead, term=3), ListJournal(behind, term=2)]
    for journal in journals:
        journal.commit_index = 100
    addrs = free_addresses(3)
    with (
        P.patch_enabled("b1_probe_floor", fixed),
        P.patch_enabled("b1_conflict_hint", fixed),
        Cluster() as cluster,
    ):

        def start(i: int) -> Any:
            conf = base_conf(journalFile=journals[i], appendEntriesBatchSizeBytes=2**16)
            return cluster.start(Counter, addrs[i], [a for a in addrs if a != addrs[i]], conf)

        first_two = [start(0), start(1)]
        leader = wait_for(lambda: leader_of(first_two), 10)
        assert leader is not None
        leader_journal = journals[first_two.index(leader)]
        start(2)  # the node that comes back with its term-2 suffix
        converged = wait_for(
            lambda: journals[2].snapshot() == leader_journal.snapshot(), 10 if fixed else 3
        )
        if fixed:
            assert converged
            assert journals[2].bad_truncations == 0
        else:
            assert not converged
            assert journals[2][-1][1:] == (130, 2)  # stuck on its divergent suffix


# ----------------------------------------------------------------------------- B3


def value_crossing_batch(batch: int) -> bytes:
    """A value whose command is just under 2 * batch bytes while the pickled log entry
    (command + index + term) is just over: the size that trips B3's 'finish' test."""
    n = 2 * batch - 64
    while len(command_for(b"\0" * (n + 1))) <= 2 * batch - 8:
        n += 1
    return os.urandom(n)


def test_b3_guard_refuses_a_command_as_big_as_a_batch() -> None:
    with Cluster() as cluster:
        node = start_single(cluster, appendEntriesBatchSizeBytes=2**16)
        with pytest.raises(InvalidRequestError):
            node.put(os.urandom(100_000), sync=True, timeout=5)
        assert node.put(b"small", sync=True, timeout=5) == 1


def test_b3_big_entry_is_corrupted_in_the_chunked_path(caplog: pytest.LogCaptureFixture) -> None:
    """The bug, with the guard off: followers fail unpickling a truncated entry."""
    caplog.set_level(logging.ERROR, logger="pysyncobj")
    batch = 2**16
    value = value_crossing_batch(batch)
    with P.patch_enabled("b3_entry_guard", False), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, appendEntriesBatchSizeBytes=batch)
        leader_of(nodes).put(value, sync=True, timeout=10)
        wait_for(lambda: tick_errors(caplog, pickle.UnpicklingError) >= 2, 5)
    assert tick_errors(caplog, pickle.UnpicklingError) >= 2  # one per follower


def put_retrying(nodes: list[Any], value: bytes, attempts: int = 4) -> None:
    """put(value) on the leader; an ambiguous outcome (an election while a big entry is in
    flight, likely when three nodes share one GIL on a busy machine) is retried."""
    retryable = {P.FAIL_REASON.DISCARDED, P.FAIL_REASON.LEADER_CHANGED, "Timeout"}
    retryable |= {P.FAIL_REASON.NOT_LEADER, P.FAIL_REASON.MISSING_LEADER}
    for _ in range(attempts):
        leader = wait_for(lambda: leader_of(nodes), 10)
        try:
            leader.put(value, sync=True, timeout=20)
            return
        except P.SyncObjException as exc:
            if exc.errorCode not in retryable:
                raise
    pytest.fail(f"no success in {attempts} attempts")


def test_big_entries_replicate_intact_with_our_settings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="pysyncobj")
    addrs = free_addresses(3)
    values = [os.urandom(2**20), os.urandom(10 * 2**20)]
    with Cluster() as cluster:
        nodes = []
        for addr in addrs:
            conf = P.make_conf(bind_address=addr, password="s3cret", journal=ListJournal())
            nodes.append(cluster.start(Counter, addr, [a for a in addrs if a != addr], conf))
        for value in values:
            put_retrying(nodes, value)

        def intact(node: Any) -> bool:  # every value everywhere, every copy byte-identical
            return all(v in node.values for v in values) and all(x in values for x in node.values)

        assert wait_for(lambda: all(intact(n) for n in nodes), 20)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ----------------------------------------------------------------------------- idle link


class _RecordingTransport(TCPTransport):  # type: ignore[misc]
    """The real TCP transport, remembering probes it received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.probes = 0
        super().__init__(*args, **kwargs)

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "gcsha_probe":
            self.probes += 1
        super()._onMessageReceived(node, message)


@pytest.mark.slow
def test_idle_follower_link_survives_the_first_message() -> None:
    """pysyncobj's default connectionTimeout (3.5 s) drops the idle follower<->follower link
    at its first message (in real life: the first vote after the leader died)."""
    results = {}
    with Cluster() as cluster:
        clusters = {
            "default": start_cluster(
                cluster, 3, connectionTimeout=3.5, transportClass=_RecordingTransport
            ),
            "ours": start_cluster(
                cluster,
                3,
                connectionTimeout=P.LINK_TIMEOUT_S,
                tcp_keepalive=P.TCP_KEEPALIVE,
                transportClass=_RecordingTransport,
            ),
        }
        time.sleep(4.0)  # the followers' link stays idle
        for name, nodes in clusters.items():
            leader = leader_of(nodes)
            sender, receiver = [n for n in nodes if n is not leader]
            target = next(n for n in sender.otherNodes if n == receiver.selfNode)
            probe = functools.partial(
                sender._SyncObj__transport.send, target, {"type": "gcsha_probe"}
            )
            sent = run_in_tick(sender, probe)
            inbox = receiver._SyncObj__transport
            wait_for(functools.partial(getattr, inbox, "probes"), 1.0)
            results[name] = (sent, inbox.probes)
    assert results["default"] == (False, 0)
    assert results["ours"] == (True, 1)


# ----------------------------------------------------------------------------- durability


class _AckRecordingTransport(TCPTransport):  # type: ignore[misc]
    """Appends ("ack", next index) / ("vote", term) to the journal's events once sent."""

    def send(self, node: Any, message: Any) -> bool:
        sent: bool = super().send(node, message)
        journal = self._syncObj._SyncObj__raftLog
        if message.get("type") == "next_node_idx" and message.get("success"):
            journal.events.append(("ack", message["next_node_idx"]))
        elif message.get("type") == "response_vote":
            journal.events.append(("vote", message["term"]))
        return sent


def durability_violations(events: list[tuple[str, int]]) -> int:
    """Acks, votes and commit-index moves not covered by an earlier flush of that index."""
    flushed = -1
    violations = 0
    for kind, value in events:
        if kind == "flush":
            flushed = max(flushed, value)
        else:
            needed = {"ack": value - 1, "commit": value, "vote": 0}[kind]
            violations += needed > flushed
    return violations


@pytest.mark.parametrize("hooks", [True, False])
def test_journal_is_flushed_before_acks_votes_and_leader_commit(hooks: bool) -> None:
    journals = [ListJournal() for _ in range(3)]
    for journal in journals:
        journal.record = True
    with (
        P.patch_enabled("flush_before_ack", hooks),
        P.patch_enabled("flush_leader_tick", hooks),
        P.patch_enabled("flush_after_send", hooks),
        Cluster() as cluster,
    ):
        nodes = start_cluster(
            cluster, 3, journalFile=journals, transportClass=_AckRecordingTransport
        )
        pipelined_load(leader_of(nodes), 500, 50)
    events = [j.events for j in journals]
    assert sum(kind == "ack" for e in events for kind, _ in e) >= 500
    assert any(kind == "vote" for e in events for kind, _ in e)
    violations = [durability_violations(e) for e in events]
    if hooks:
        assert violations == [0, 0, 0]
    else:
        assert all(v > 0 for v in violations)


# ----------------------------------------------------------------------------- write path


class AckWatch(Counter):
    """Records, for every append ack this node receives as leader, the acknowledged index
    and how far its own journal was flushed at that moment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.acks_seen: list[tuple[int, int]] = []
        super().__init__(*args, **kwargs)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        if message.get("type") == "next_node_idx" and message.get("success") and self._isLeader():
            journal = self._SyncObj__raftLog
            self.acks_seen.append((message["next_node_idx"] - 1, journal.acked))
        super()._SyncObj__onMessageReceived(node, message)


def sequential_load(leader: Any, count: int) -> None:
    """count puts, each waiting for the previous one's callback."""
    for i in range(count):
        done = threading.Event()
        leader.put(i, callback=lambda result, error, done=done: done.set())
        assert done.wait(10)


@pytest.mark.parametrize("overlap", [True, False])
def test_the_leader_fsyncs_while_its_followers_do(overlap: bool) -> None:
    """flush_after_send: a new entry is on the leader's disk before its first ack comes
    back (the leader's fsync overlaps the followers'). Without it the leader fsyncs at the
    start of the next tick, after that ack: its fsync follows theirs."""
    journals = [ListJournal() for _ in range(3)]
    with P.patch_enabled("flush_after_send", overlap), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, node_class=AckWatch, journalFile=journals)
        leader = leader_of(nodes)
        leader.acks_seen.clear()
        sequential_load(leader, 100)
    first: dict[int, int] = {}  # entry index -> leader's flushed index at its first ack
    for index, flushed in leader.acks_seen:
        first.setdefault(index, flushed)
    assert len(first) >= 100
    covered = sum(flushed >= index for index, flushed in first.items()) / len(first)
    if overlap:
        assert covered == 1.0
    else:
        assert covered < 0.5


class SendCounter(TCPTransport):  # type: ignore[misc]
    """Counts the AppendEntries this node sends."""

    appends = 0

    def send(self, node: Any, message: Any) -> bool:
        if message.get("type") == "append_entries":
            SendCounter.appends += 1
        sent: bool = super().send(node, message)
        return sent


@pytest.mark.parametrize("patched", [True, False])
def test_no_append_entries_only_to_carry_the_commit_index(patched: bool) -> None:
    """no_commit_only_append: one AppendEntries per follower per entry (plus heartbeats);
    pysyncobj alone sends a second one after every apply, only for the commit index."""
    with P.patch_enabled("no_commit_only_append", patched), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, transportClass=SendCounter)
        leader = leader_of(nodes)
        time.sleep(0.2)
        SendCounter.appends = 0
        sequential_load(leader, 100)
        per_entry = SendCounter.appends / (100 * 2)
    if patched:
        assert per_entry < 1.3
    else:
        assert per_entry > 1.7


@pytest.mark.parametrize("patched", [True, False])
def test_followers_echo_the_read_tag(patched: bool) -> None:
    """read_echo: every AppendEntries carries the leader's read tag and each follower's
    answer echoes it, so the leader knows a majority still followed it after the tag was
    set (ReadIndex)."""
    with P.patch_enabled("read_echo", patched), Cluster() as cluster:
        nodes = start_cluster(cluster, 3)
        leader = leader_of(nodes)
        followers = {str(n.selfNode.id) for n in nodes if n is not leader}
        run_in_tick(leader, lambda: P.set_read_tag(leader, 7))
        wait_for(lambda: P.read_tag_sent(leader), 2)
        echoed = wait_for(lambda: len(P.read_echoes(leader)) == 2, 2)
        echoes = dict(P.read_echoes(leader))
    if patched:
        assert echoed and echoes == dict.fromkeys(followers, 7)
    else:
        assert echoes == {}


@pytest.mark.parametrize("patched", [True, False])
def test_one_membership_change_at_a_time(patched: bool) -> None:
    """one_config_change: two membership changes queued in the same tick; the leader takes
    the first and denies the second while the first is not applied (off: both go into the
    log uncommitted, so two configurations could have disjoint majorities). Once the first
    is applied, the next change is accepted again."""
    outcomes: list[Any] = []
    lock = threading.Lock()

    def record(result: Any, error: Any) -> None:
        with lock:
            outcomes.append(error)

    spare = free_addresses(3)
    with P.patch_enabled("one_config_change", patched), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, dynamicMembershipChange=True)
        leader = leader_of(nodes)

        def two_changes() -> None:
            leader.addNodeToCluster(spare[0], callback=record)
            leader.addNodeToCluster(spare[1], callback=record)

        run_in_tick(leader, two_changes)
        assert wait_for(lambda: len(outcomes) == 2, 5)
        first = sorted(outcomes)
        if patched:  # off, the cluster now has 5 members, 2 of them unreachable
            outcomes.clear()
            run_in_tick(leader, lambda: leader.addNodeToCluster(spare[2], callback=record))
            assert wait_for(lambda: len(outcomes) == 1, 5)
            assert outcomes == [P.FAIL_REASON.SUCCESS]
    if patched:  # the denial is answered at once, the success once applied
        assert first == [P.FAIL_REASON.SUCCESS, P.FAIL_REASON.REQUEST_DENIED]
    else:
        assert first == [P.FAIL_REASON.SUCCESS, P.FAIL_REASON.SUCCESS]


@pytest.mark.parametrize("patched", [True, False])
def test_followers_elect_at_once_when_the_leaders_link_closes(patched: bool) -> None:
    """leader_gone: the leader's sockets close (its process died); with election timeouts of
    3-4 s the followers still elect a new leader within 2 s, because the close starts an
    election within LEADER_GONE_ELECTION_S (off: they wait out the 3 s timeout)."""
    with P.patch_enabled("leader_gone", patched), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, raftMinTimeout=3.0, raftMaxTimeout=4.0)
        leader = leader_of(nodes)
        cluster.nodes.remove(leader)
        leader.destroy_synchronous()  # its transport closes every connection
        survivors = [n for n in nodes if n is not leader]
        elected = wait_for(lambda: leader_of(survivors), 2.0)
        assert (elected is not None) == patched
        if not patched:  # the timeout still elects one
            assert wait_for(lambda: leader_of(survivors), 10.0) is not None


def test_leader_gone_delays_give_each_survivor_its_own_slot() -> None:
    """Survivors stand one slot apart by address order, whatever the jitter: two never
    stand at once (drawn uniformly over 100 ms, one election in five was a split vote)."""
    members = ["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:4", "127.0.0.1:2", "127.0.0.1:5"]
    leader = "127.0.0.1:2"
    for _ in range(50):
        delays = {
            m: P.leader_gone_delay(m, [o for o in members if o != m], leader)
            for m in members
            if m != leader
        }
        order = sorted(delays, key=delays.__getitem__)
        assert order == ["127.0.0.1:1", "127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5"]
        gaps = [delays[b] - delays[a] for a, b in itertools.pairwise(order)]
        assert min(gaps) >= P.LEADER_GONE_SLOT_S - P.LEADER_GONE_JITTER_S
        assert P.LEADER_GONE_FIRST_S <= delays[order[0]] <= 0.05


@pytest.mark.parametrize("patched", [True, False])
def test_a_joiner_never_unseats_the_leader(patched: bool) -> None:
    """quiet_joiner: a node started to join waits until the leader adds it. Off, it stands
    for election while the members still refuse its connections (each dial succeeds for a
    moment), so its term climbs past the leader's, and the leader steps down when the two
    first talk after the add; on, its term stays 0 and the leader stays."""
    with P.patch_enabled("quiet_joiner", patched), Cluster() as cluster:
        nodes = start_cluster(cluster, 3, dynamicMembershipChange=True)
        leader = leader_of(nodes)
        term = leader.raftCurrentTerm
        conf = base_conf(dynamicMembershipChange=True)
        setattr(conf, P.JOINING_ATTRIBUTE, True)
        addr = free_addresses(1)[0]
        joiner = cluster.start(Counter, addr, [n.selfNode.address for n in nodes], conf)
        campaigned = wait_for(lambda: joiner.raftCurrentTerm > term, 2.0 if patched else 20.0)
        assert bool(campaigned) != patched
        run_in_tick(leader, lambda: leader.addNodeToCluster(addr, callback=lambda *_: None))
        assert wait_for(lambda: joiner.raftLastApplied > 1, 10), "the joiner never caught up"
        unseated = leader.raftCurrentTerm != term or not leader._isLeader()
    assert unseated != patched


def received(path: Path, data: bytes, batch: int = 1000) -> bool:
    """Feed `data` to a fresh pysyncobj Serializer for dump `path` in chunks, as a leader's
    snapshot arrives; whether the last chunk reported the dump replaced."""
    serializer = pysyncobj.serializer.Serializer(str(path), batch, False, None, None, None)
    chunks = [data[i : i + batch] for i in range(0, len(data), batch)]
    done = False
    for n, chunk in enumerate(chunks):
        done = serializer.setTransmissionData((chunk, n == 0, n == len(chunks) - 1))
    return bool(done)


def a_snapshot(tmp_path: Path) -> bytes:
    """The bytes of a real gcs-ha snapshot (header, LMDB image, digest)."""
    lmdb = tmp_path / "source-lmdb"
    env = LmdbEnv(lmdb, sync=False)
    with env.write() as txn:
        for i in range(50):
            txn.put(KV_TABLE, b"k%d" % i, b"v" * 100)
        txn.set_applied_index(50)
    sm = LmdbStateMachine(env, lambda what, exc: None)
    dump = tmp_path / "source.dump"
    snap = Snapshotter(sm, lmdb, dump, lambda: env, str)
    snap.serialize(str(dump) + ".tmp", ((b"", 50, 1), (b"", 49, 1), []))
    snap.wait()
    snap.check()
    env.close()
    return dump.read_bytes()


@pytest.mark.parametrize("patched", [True, False])
def test_a_received_snapshot_is_synced_and_checked_before_it_replaces_the_dump(
    patched: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durable_snapshot_receive: the received file and the directory of its rename are
    fsynced, and a damaged snapshot (one image byte flipped in transit) is dropped
    unacknowledged, the current dump kept (off: no fsync at all, and the damaged file
    replaces the dump and is reported as received)."""
    good = a_snapshot(tmp_path)
    damaged = bytearray(good)
    damaged[-100] ^= 0xFF
    dump = tmp_path / "dump"
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with P.patch_enabled("durable_snapshot_receive", patched):
        assert received(dump, good)
        assert dump.read_bytes() == good
        assert (len(synced) >= 2) == patched  # the file, then its directory
        assert received(dump, bytes(damaged)) != patched
    assert dump.read_bytes() == (good if patched else bytes(damaged))
    assert not Path(str(dump) + ".1.tmp").exists()


# ----------------------------------------------------------------------------- untrusted


def idle_sockets(addr: str, count: int) -> list[socket.socket]:
    host, port = addr.rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=2) for _ in range(count)]
    for sock in socks:
        sock.settimeout(0.05)
    return socks


@pytest.mark.parametrize("patched", [True, False])
def test_connections_without_the_secret_are_bounded(
    patched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """untrusted_limits: before it proved the secret, a connection may announce a frame of
    64 KiB at most, must finish its handshake in time, and only so many may be open (off:
    a 1 MiB frame is buffered, idle connections stay, there is no cap)."""
    monkeypatch.setattr(P, "MAX_UNTRUSTED_CONNECTIONS", 4)
    monkeypatch.setattr(P, "HANDSHAKE_TIMEOUT_S", 1.0)
    addr = free_addresses(1)[0]
    with P.patch_enabled("untrusted_limits", patched), Cluster() as cluster:
        node = start_single(cluster, addr, password="s3cret-for-this-test")
        big = raw_exchange(addr, struct.pack("i", 2**20) + b"x" * 4096, wait=0.5)
        socks = idle_sockets(addr, 6)
        try:
            time.sleep(0.3)
            at_once = sum(closed(s) for s in socks)
            time.sleep(1.5)
            later = sum(closed(s) for s in socks)
        finally:
            for sock in socks:
                sock.close()
        assert node.put(1, sync=True, timeout=5) == 1  # still serving
    if patched:
        assert big and at_once == 2 and later == 6  # the last 4: their handshake timed out
    else:
        assert not big and at_once == 0 and later == 0
