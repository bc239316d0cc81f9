"""Raft in one process without sockets: real nodes, a network and a clock the test drives.

Each node is a real `RaftNode` applying to a real `LmdbStateMachine`; only the transport
and the clock are simulated. The test delivers, drops, delays and partitions messages,
stops and restarts nodes, and advances `RaftSim.now` by hand (`step`, `advance`,
`run_until`). Semantics and limits: DESIGN.md ("The Raft simulator").
"""

from __future__ import annotations

import os
import pickle
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus import envelope
from gcs_ha.consensus.config import RaftTiming
from gcs_ha.consensus.journal import DurableJournal
from gcs_ha.consensus.raft_node import RaftNode
from gcs_ha.consensus.snapshotter import Snapshotter
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import GcsHaError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE

MAP_SIZE = 64 * 2**20
DropRule = Callable[[str, str, dict[str, Any]], bool]


class SimFatal(GcsHaError):
    """A node's state machine met a fatal error (the real replica would exit 70)."""


class SimTimeout(AssertionError):
    """`run_until`'s condition did not hold within its simulated time."""


class MemoryJournal:
    """pysyncobj's journal interface (`_pysyncobj.RaftJournal`) over a list. It survives
    its node's `stop` and `start` (the sim keeps it), like a file whose every write was
    synced. `flushed` is the last index at the latest `flush()`: with ``flush_before_ack``
    the highest index the node may have acknowledged; `cuts_below_flushed` counts the
    truncations that removed entries below it (bug B2's signature)."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, int]] = []
        self.term = 0
        self.voted_for: Any = None
        self.commit_index = 1
        self.flushes = 0
        self.flushed = 0
        self.cuts_below_flushed = 0

    def add(self, command: bytes, idx: int, term: int) -> None:
        self.entries.append((command, idx, term))

    def clear(self) -> None:
        self.entries.clear()
        self.flushed = 0

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        new_last = self.entries[entryFrom - 1][1] if entryFrom > 0 else 0
        if entryFrom < len(self.entries) and new_last < self.flushed:
            self.cuts_below_flushed += 1
        del self.entries[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        del self.entries[:entryTo]

    def __getitem__(self, item: Any) -> Any:
        return self.entries[item]

    def __len__(self) -> int:
        return len(self.entries)

    def _destroy(self) -> None:
        pass

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self.commit_index = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self.commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self.term, self.voted_for = term, votedForNodeId

    def getCurrentTerm(self) -> int:
        return self.term

    def getVotedForNodeId(self) -> Any:
        return self.voted_for

    def onOneSecondTimer(self) -> None:
        pass

    def flush(self) -> None:
        self.flushes += 1
        self.flushed = self.entries[-1][1] if self.entries else 0


class SimTransport(ps.Transport):  # type: ignore[misc]
    """pysyncobj's transport for one node of a `RaftSim` (built by SyncObj itself)."""

    def __init__(self, sim: RaftSim, sync_obj: Any, self_node: Any, others: Iterable[Any]):
        super().__init__(sync_obj, self_node, others)
        self.sim = sim
        self.sync_obj = sync_obj
        self.name = str(self_node.id)
        self.nodes: dict[str, Any] = {str(n.id): n for n in others}
        self.connected: set[str] = set()

    def addNode(self, node: Any) -> None:
        self.nodes[str(node.id)] = node

    def dropNode(self, node: Any) -> None:
        self.nodes.pop(str(node.id), None)

    def send(self, node: Any, message: Any) -> bool:
        return self.sim._post(self.name, str(node.id), ps.outgoing(self.sync_obj, message))

    def destroy(self) -> None:
        self.sim._detach(self.name)

    def connect(self, peer: str) -> None:
        self.connected.add(peer)
        self._onNodeConnected(self.nodes[peer])

    def disconnect(self, peer: str) -> None:
        self.connected.discard(peer)
        node = self.nodes.get(peer)
        self._onNodeDisconnected(node if node is not None else ps.TCPNode(peer))

    def receive(self, peer: str, message: Any) -> None:
        node = self.nodes.get(peer)
        if node is not None and peer in self.connected:
            self._onMessageReceived(node, message)


@dataclass
class SimNode:
    """One node's parts. `raft` and `sm` exist while it runs; the journal, its LMDB
    directory and its snapshot stay across `stop` and `start`."""

    name: str
    data_dir: Path
    journal: MemoryJournal | DurableJournal | None = None
    raft: RaftNode | None = None
    sm: LmdbStateMachine | None = None
    snapshotter: Snapshotter | None = None
    transport: SimTransport | None = None
    roles: list[tuple[float, int, int]] = field(default_factory=list)  # (time, term, state)

    @property
    def running(self) -> bool:
        return self.raft is not None

    @property
    def obj(self) -> Any:
        """The SyncObj (for the status accessors of pysyncobj)."""
        if self.raft is None:
            raise RuntimeError(f"node {self.name} is stopped")
        return self.raft.sync_obj

    def get(self, key: bytes) -> bytes | None:
        """The KV value under `key` in this node's LMDB (what it applied and committed)."""
        if self.sm is None:
            raise RuntimeError(f"node {self.name} is stopped")
        with self.sm.env.read() as txn:
            return txn.get(KV_TABLE, key)

    def log(self) -> list[tuple[int, int]]:
        """(index, term) of every entry in this node's Raft log."""
        journal = self.journal
        return [] if journal is None else [(e[1], e[2]) for e in journal[:]]

    def last(self) -> tuple[int, int]:
        """(index, term) of the last entry in this node's Raft log."""
        journal = self.journal
        if journal is None or not len(journal):
            return (0, 0)
        entry = journal[-1]
        return int(entry[1]), int(entry[2])

    def log_commands(self) -> list[bytes]:
        """The command of every entry in this node's Raft log (as pysyncobj stores it)."""
        journal = self.journal
        return [] if journal is None else [bytes(e[0]) for e in journal[:]]


@dataclass
class Outcome:
    """What a proposal's callback reported (None until it fired)."""

    reason: int | None = None
    result: Any = None

    def __call__(self, result: Any, reason: int) -> None:
        self.result, self.reason = result, reason

    @property
    def ok(self) -> bool:
        return self.reason is not None and int(self.reason) == int(ps.FAIL_REASON.SUCCESS)


class RaftSim:
    """A simulated cluster; use as a context manager (it installs the simulated clock and
    stops every node on exit). Node names are Raft addresses ("host:port"), never bound.

    durable: DurableJournal files in each node's directory instead of `MemoryJournal`.
    snapshots: our Snapshotter as pysyncobj's serializer (needs `durable`, for the dump).
    strict: an exception in a node's tick or message handler propagates (else it is kept
    in `errors` and the node goes on, as pysyncobj's tick loop logs and goes on).
    """

    def __init__(
        self,
        data_dir: Path,
        names: Iterable[str],
        *,
        seed: int = 0,
        timing: RaftTiming | None = None,
        batch_size_bytes: int = ps.BATCH_SIZE_BYTES,
        compaction_min_entries: int = 20_000,
        durable: bool = False,
        snapshots: bool = False,
        strict: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.timing = timing or RaftTiming()
        self.tick_s = self.timing.tick_s
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.batch_size_bytes = batch_size_bytes
        self.compaction_min_entries = compaction_min_entries
        self.durable = durable or snapshots
        self.snapshots = snapshots
        self.strict = strict
        self.errors: list[tuple[str, BaseException]] = []
        self.nodes: dict[str, SimNode] = {n: SimNode(n, data_dir / _dirname(n)) for n in names}
        self.drop: DropRule | None = None
        self.delays: dict[tuple[str, str], float] = {}
        self.delivered = 0
        self._groups: list[frozenset[str]] | None = None
        self._queues: dict[tuple[str, str], deque[tuple[float, int, bytes]]] = {}
        self._seq = 0
        self._time: Any = None

    # -- lifetime -----------------------------------------------------------------------

    def __enter__(self) -> RaftSim:
        self._time = ps.simulated_time(lambda: self.now, self.rng)
        self._time.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            for name in list(self.nodes):
                if self.nodes[name].running:
                    self.stop(name)
        finally:
            self._time.__exit__(kind, exc, tb)

    def start_all(self) -> None:
        for name in self.nodes:
            self.start(name)

    def start(self, name: str, peers: Iterable[str] | None = None, joining: bool = False) -> None:
        """Start (or restart) `name`; `peers` defaults to every other node of the sim."""
        node = self.nodes.setdefault(name, SimNode(name, self.data_dir / _dirname(name)))
        others = [n for n in (self.nodes if peers is None else peers) if n != name]
        lmdb_dir, raft_dir = node.data_dir / "lmdb", node.data_dir / "raft"
        raft_dir.mkdir(parents=True, exist_ok=True)
        env = LmdbEnv(lmdb_dir, sync=False, metasync=False, map_size=MAP_SIZE)
        sm = LmdbStateMachine(env, _fatal)
        if self.durable:
            node.journal = DurableJournal(raft_dir / "journal")
        elif node.journal is None:
            node.journal = MemoryJournal()
        node.snapshotter = None
        if self.snapshots:
            node.snapshotter = Snapshotter(
                sm,
                lmdb_dir,
                raft_dir / "snapshot",
                lambda: LmdbEnv(lmdb_dir, sync=False, metasync=False, map_size=MAP_SIZE),
                ps.TCPNode,
                on_fatal=_fatal,
            )
        conf = self._conf(node, joining)
        node.sm = sm
        node.raft = RaftNode(sm, name, others, conf, transport_class=self._transport_for(node))
        node.raft.add_tick_callback(sm.commit)

    def stop(self, name: str) -> None:
        """Stop `name` as a crash would: its peers see their links to it close at once.
        Its journal (memory or file), LMDB directory and snapshot stay for `start`."""
        node = self.nodes[name]
        raft, sm = node.raft, node.sm
        if raft is None or sm is None:
            return
        obj = raft.sync_obj
        raft.stop()
        _close_pipe(obj)
        if node.snapshotter is not None:
            node.snapshotter.wait()
        sm.commit()
        sm.env.close()
        node.raft = node.sm = node.transport = None
        self._links()

    def _conf(self, node: SimNode, joining: bool) -> Any:
        snap = node.snapshotter
        return ps.make_conf(
            bind_address=node.name,
            password=None,
            insecure=True,
            journal=node.journal,
            full_dump_file=str(node.data_dir / "raft" / "snapshot") if self.durable else None,
            serializer=None if snap is None else snap.serialize,
            deserializer=None if snap is None else snap.deserialize,
            serialize_checker=None if snap is None else snap.check,
            on_state_changed=lambda _old, new: self._role(node, new),
            timing=self.timing,
            log_compaction_min_entries=self.compaction_min_entries,
            batch_size_bytes=self.batch_size_bytes,
            auto_tick=False,
            joining=joining,
        )

    def _transport_for(self, node: SimNode) -> Callable[..., SimTransport]:
        def build(sync_obj: Any, self_node: Any, others: Iterable[Any]) -> SimTransport:
            node.transport = SimTransport(self, sync_obj, self_node, others)
            return node.transport

        return build

    def _role(self, node: SimNode, state: int) -> None:
        term = int(node.raft.term()) if node.raft is not None else 0
        node.roles.append((self.now, term, state))

    # -- time -------------------------------------------------------------------------

    def step(self) -> None:
        """One round: the clock moves one tick, every running node ticks, the network
        delivers until quiet."""
        self.now += self.tick_s
        self._links()
        for node in self._running():
            self._guard(node.name, node.obj.doTick, 0.0)
        self._deliver_all()
        for node in self._running():
            if node.snapshotter is not None:
                node.snapshotter.wait()  # the writer thread, joined: a repeatable run

    def advance(self, seconds: float) -> None:
        """Run rounds for `seconds` of simulated time."""
        end = self.now + seconds - self.tick_s / 2
        while self.now < end:
            self.step()

    def run_until(self, condition: Callable[[], object], within: float) -> float:
        """Run rounds until `condition()` holds; the simulated seconds that took.
        SimTimeout if it does not hold within `within` simulated seconds."""
        start = self.now
        while not condition():
            if self.now - start >= within:
                raise SimTimeout(f"not reached within {within} s of simulated time")
            self.step()
        return self.now - start

    # -- the network ------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network into `groups` (nodes in none form one more group): messages
        between groups are lost, silently; links stay up, as when a cable is cut."""
        named = [frozenset(g) for g in groups]
        rest = frozenset(self.nodes) - frozenset().union(*named)
        self._groups = [*named, rest] if rest else named

    def isolate(self, name: str) -> None:
        self.partition([name])

    def heal(self) -> None:
        self._groups = None

    def reachable(self, src: str, dst: str) -> bool:
        if self._groups is None:
            return True
        return any(src in g and dst in g for g in self._groups)

    def _post(self, src: str, dst: str, message: Any) -> bool:
        sender = self.nodes[src].transport
        if sender is None or dst not in sender.connected:
            return False  # not connected: TCPTransport.send returns False too
        if not self.reachable(src, dst) or (self.drop is not None and self.drop(src, dst, message)):
            return True  # sent, and lost on the way
        queue = self._queues.setdefault((src, dst), deque())
        at = self.now + self.delays.get((src, dst), 0.0)
        if queue:
            at = max(at, queue[-1][0])  # one TCP stream: in order
        self._seq += 1
        queue.append((at, self._seq, pickle.dumps(message, protocol=5)))
        return True

    def _deliver_all(self) -> None:
        for _ in range(100_000):
            due = [
                (q[0][0], q[0][1], link)
                for link, q in self._queues.items()
                if q and q[0][0] <= self.now + 1e-9
            ]
            if not due:
                return
            _, _, (src, dst) = min(due)
            _, _, data = self._queues[(src, dst)].popleft()
            receiver = self.nodes[dst].transport
            if receiver is None:
                continue
            self.delivered += 1
            message = ps.restricted_loads(data)
            self._guard(dst, receiver.receive, src, message)
        raise RuntimeError("the simulated network never went quiet")

    def _links(self) -> None:
        """Bring links up between running nodes that know each other; close the rest."""
        running = {n.name: n.transport for n in self._running() if n.transport is not None}
        for name, transport in running.items():
            for peer in list(transport.connected):
                other = running.get(peer)
                if other is None or name not in other.nodes or peer not in transport.nodes:
                    transport.disconnect(peer)
                    self._queues.pop((name, peer), None)
                    self._queues.pop((peer, name), None)
        for name, transport in running.items():
            for peer, other in running.items():
                mutual = peer in transport.nodes and name in other.nodes
                if mutual and peer not in transport.connected:
                    transport.connect(peer)

    def _detach(self, name: str) -> None:
        for link in [k for k in self._queues if name in k]:
            del self._queues[link]

    def _guard(self, name: str, action: Callable[..., None], *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:
            if self.strict:
                raise
            self.errors.append((name, exc))

    def _running(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.running]

    # -- what tests ask ---------------------------------------------------------------

    def leaders(self) -> list[str]:
        return [n.name for n in self._running() if n.raft is not None and n.raft.is_leader()]

    def leader(self) -> str | None:
        """The one running node that believes it leads, or None (none, or several)."""
        found = self.leaders()
        return found[0] if len(found) == 1 else None

    def elect(self, within: float = 5.0) -> str:
        """Run until there is one leader and it has applied its term's no-op."""

        def ready() -> bool:
            name = self.leader()
            return name is not None and self._caught_up(self.nodes[name])

        self.run_until(ready, within)
        name = self.leader()
        assert name is not None
        return name

    def propose(self, name: str, key: bytes, value: bytes) -> Outcome:
        """Propose a put of `key` at node `name` (a follower forwards it to its leader)."""
        outcome = Outcome()
        data = envelope.encode([envelope.put(KV_TABLE, key, value, True)])
        raft = self.nodes[name].raft
        assert raft is not None, f"node {name} is stopped"
        raft.propose(data, outcome)
        return outcome

    def write(self, name: str, key: bytes, value: bytes, within: float = 2.0) -> None:
        """Propose and run until the proposal succeeded (AssertionError otherwise)."""
        outcome = self.propose(name, key, value)
        self.run_until(lambda: outcome.reason is not None, within)
        assert outcome.ok, f"put {key!r} at {name}: reason {outcome.reason}"

    def converged(self, names: Iterable[str] | None = None) -> bool:
        """Whether the running nodes (or `names`) hold the same log and applied all of it."""
        nodes = [self.nodes[n] for n in names] if names is not None else self._running()
        logs = {n.last() for n in nodes}
        return len(logs) == 1 and all(self._caught_up(n) for n in nodes)

    def digests(self) -> dict[str, tuple[int, str]]:
        """Each running node's LMDB (applied index, digest of every table)."""
        return {n.name: n.sm.env.digest() for n in self._running() if n.sm is not None}

    @staticmethod
    def _caught_up(node: SimNode) -> bool:
        raft = node.raft
        return raft is not None and raft.last_applied() == node.last()[0]


def _dirname(name: str) -> str:
    return name.replace(":", "_")


def _fatal(what: str, exc: BaseException) -> None:
    raise SimFatal(what) from exc


def _close_pipe(obj: Any) -> None:
    """pysyncobj leaks its PipeNotifier's two descriptors on destroy; close them."""
    pipe = getattr(obj, "_SyncObj__pipeNotifier", None)
    for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
        fd = getattr(pipe, name, None)
        if fd is not None:
            os.close(fd)


def cluster_names(n: int) -> list[str]:
    """n node names ("sim-a:1", ...): ordered like their letters, never bound."""
    return [f"sim-{chr(ord('a') + i)}:1" for i in range(n)]


def iter_terms(nodes: Iterable[SimNode]) -> Iterator[tuple[int, str]]:
    """(term, node) for every time a node became leader."""
    for node in nodes:
        for _, term, state in node.roles:
            if state == ps.RAFT_LEADER:
                yield term, node.name
