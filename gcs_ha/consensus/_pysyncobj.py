"""The only gcs-ha module that imports pysyncobj: our settings and our patch layer.

Every fix for a pysyncobj 0.3.17 bug is a named patch (each one, its bug and its test:
docs/pysyncobj-patches.md). `apply_patches()` installs them all once (it also runs at
import); `patch_enabled(name, False)` switches one off so a test can show its bug.
`make_conf` builds pysyncobj's settings. Also the seams of the in-process simulation
(`outgoing`, `Transport`, `simulated_time`; DESIGN.md, "Testing without sockets") and the
dial map of drills (`GCS_HA_RAFT_DIAL`, testing only).

Errors raised: InvalidRequestError (oversized command), ConfigError (bad `make_conf` input,
a malformed GCS_HA_RAFT_DIAL), ValueError (unknown patch name; a programming error).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import random
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.serializer
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.transport
from pysyncobj import (
    FAIL_REASON,
    SERIALIZER_STATE,
    SyncObj,
    SyncObjConf,
    SyncObjConsumer,
    SyncObjException,
    replicated,
    replicated_sync,
)
from pysyncobj.node import Node, TCPNode
from pysyncobj.transport import Transport

from gcs_ha.consensus.config import RaftTiming
from gcs_ha.consensus.envelope import MAX_ENTRY_BYTES
from gcs_ha.consensus.snapshot import MAGIC as SNAPSHOT_MAGIC
from gcs_ha.consensus.snapshot import fsync_dir, verify_snapshot
from gcs_ha.errors import ConfigError, GcsHaError, InvalidRequestError

__all__ = [
    "BATCH_SIZE_BYTES",
    "COMPRESS_LEVEL",
    "FAIL_REASON",
    "MAX_ENTRY_BYTES",
    "MAX_FRAME_BYTES",
    "PATCHES",
    "RAFT_CANDIDATE",
    "RAFT_DIAL_ENV",
    "RAFT_FOLLOWER",
    "RAFT_LEADER",
    "SERIALIZER_STATE",
    "SOCKET_BUFFER_BYTES",
    "TCP_KEEPALIVE",
    "Node",
    "RaftJournal",
    "SyncObj",
    "SyncObjConf",
    "SyncObjConsumer",
    "SyncObjException",
    "TCPNode",
    "Transport",
    "apply_patches",
    "is_enabled",
    "load_dial_map",
    "make_conf",
    "outgoing",
    "parse_dial_map",
    "patch_enabled",
    "read_echoes",
    "read_tag_sent",
    "replicated",
    "replicated_sync",
    "restricted_loads",
    "set_read_tag",
    "simulated_time",
]

logger = logging.getLogger(__name__)

BATCH_SIZE_BYTES: Final = 2 * MAX_ENTRY_BYTES
"""appendEntriesBatchSizeBytes: no legal entry reaches it, so B3's chunked path is dead code."""
MAX_FRAME_BYTES: Final = 512 * 2**20
"""Largest frame (and decompressed frame) a peer may send; a batch of legal entries fits."""
HANDSHAKE_FRAME_BYTES: Final = 64 * 2**10
"""Largest frame a connection may announce before it proved the secret (the handshake
frames carry a 32-byte key and a peer address)."""
HANDSHAKE_TIMEOUT_S = 10.0
"""An accepted connection not associated with a peer by then is closed (tests lower it)."""
MAX_UNTRUSTED_CONNECTIONS = 32
"""Accepted connections still in their handshake, at most (tests lower it)."""
COMPRESS_LEVEL: Final = 0
"""zlib level for frames: 10 MB random costs 3 ms at 0, 152 ms at 1 or 3 (see the docs)."""
TCP_KEEPALIVE: Final = (5, 2, 3)
"""(idle s, probe interval s, probes): a silent dead peer is dropped after about 11 s."""
SOCKET_BUFFER_BYTES: Final = 4 * 2**20
"""SO_SNDBUF/SO_RCVBUF and recv size. pysyncobj's 64 KiB (which also turns off the kernel's
autotuning) made a 10 MB entry outlast the election timeout: heartbeats queue behind it."""
LINK_TIMEOUT_S: Final = 1e9
"""connectionTimeout: pysyncobj's read-inactivity timeout, disabled (keepalive replaces it)."""
DNS_CACHE_S: Final = 5.0
"""dnsCacheTime: how long a peer's resolved host name is kept. pysyncobj's 600 s kept
dialing a peer's old IP for up to 10 minutes after it came back on a new one (a
Kubernetes pod rescheduled, a container recreated): a rolling restart of a StatefulSet
lost its majority (tests/deploy/test_deploy_names.py). Names are looked up only when a
link is (re)dialed, on the consensus thread, so 5 s costs nothing while peers are up."""
DNS_FAIL_CACHE_S: Final = 2.0
"""dnsFailCacheTime: how long a name that did not resolve is not looked up again (30 s in
pysyncobj): a pod's name appears in DNS only once the pod has an IP."""

LEADER_GONE_FIRST_S: Final = 0.01
LEADER_GONE_SLOT_S: Final = 0.06
LEADER_GONE_JITTER_S: Final = 0.02
"""When a follower starts an election after its link to the leader closed (patch
``leader_gone``): FIRST + rank x SLOT + up to JITTER, its rank being its place among the
surviving members ordered by address. Every follower sees the close at the same moment;
one slot between candidates against a vote round of a few ms keeps two from standing at
once (drawn uniformly over 100 ms, one election in five was a split vote, which falls back
to the election timeout)."""


def leader_gone_delay(self_id: str, others: Iterable[str], leader_id: str) -> float:
    """How long a follower whose link to `leader_id` closed waits before standing."""
    survivors = sorted({self_id, *others} - {leader_id})
    rank = survivors.index(self_id)
    return LEADER_GONE_FIRST_S + rank * LEADER_GONE_SLOT_S + _rng.uniform(0, LEADER_GONE_JITTER_S)


JOINING_ATTRIBUTE: Final = "gcsha_joining"
"""The SyncObjConf attribute `make_conf(joining=...)` sets (patch ``quiet_joiner``)."""

READ_TAG_KEY: Final = "gcs_rt"
"""The AppendEntries / next_node_idx field that carries a read tag (patch ``read_echo``)."""

RAFT_DIAL_ENV: Final = "GCS_HA_RAFT_DIAL"
"""Testing/drills only: "peer_host:port=relay_host:port,..." (see `load_dial_map`)."""

RAFT_FOLLOWER: Final[int] = pysyncobj.syncobj._RAFT_STATE.FOLLOWER
RAFT_CANDIDATE: Final[int] = pysyncobj.syncobj._RAFT_STATE.CANDIDATE
RAFT_LEADER: Final[int] = pysyncobj.syncobj._RAFT_STATE.LEADER

PATCHES: Final = (
    "pickle5",
    "safe_unpickle",
    "frame_limit",
    "b1_probe_floor",
    "b1_conflict_hint",
    "b2_monotonic_next",
    "b3_entry_guard",
    "journal_injection",
    "flush_before_ack",
    "flush_leader_tick",
    "flush_after_send",
    "no_commit_only_append",
    "read_echo",
    "one_config_change",
    "leader_gone",
    "quiet_joiner",
    "compress_level",
    "link_keepalive",
    "untrusted_limits",
    "durable_snapshot_receive",
)

_enabled: dict[str, bool] = dict.fromkeys(PATCHES, True)
_lock = threading.Lock()
# (peer host, port) -> (relay host, port) from GCS_HA_RAFT_DIAL (`load_dial_map`).
_dial_map: dict[tuple[str, int], tuple[str, int]] = {}
# The clock and random source of this module's timers (leader_gone, quiet_joiner,
# untrusted_limits); `simulated_time` swaps them, and pysyncobj's, for a test's.
_clock: Callable[[], float] = time.monotonic
_rng: random.Random = random.Random()

# Everything pysyncobj legitimately pickles onto the wire or into a log command, beyond plain
# containers: its node classes (membership commands, status replies), and what protocol 2
# needs for bytes and sets (peers that still run protocol 2).
_SAFE_GLOBALS: Final = frozenset(
    {
        ("pysyncobj.node", "Node"),
        ("pysyncobj.node", "TCPNode"),
        ("_codecs", "encode"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),  # protocol < 3 names; Unpickler maps them to builtins
        ("__builtin__", "frozenset"),
    }
)


class RaftJournal(Protocol):
    """What pysyncobj calls on a journal (positions are list offsets, not Raft indexes).

    An object with `add` and `flush` given as `SyncObjConf.journalFile` is used as is.
    Entries are `(command, index, term)` tuples; `[i]` and slices index the list.
    """

    def add(self, command: bytes, idx: int, term: int) -> None: ...
    def clear(self) -> None: ...
    def deleteEntriesFrom(self, entryFrom: int) -> None: ...
    def deleteEntriesTo(self, entryTo: int) -> None: ...
    def __getitem__(self, item: Any) -> Any: ...
    def __len__(self) -> int: ...
    def _destroy(self) -> None: ...
    def setRaftCommitIndex(self, raftCommitIndex: int) -> None: ...
    def getRaftCommitIndex(self) -> int: ...
    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None: ...
    def getCurrentTerm(self) -> int: ...
    def getVotedForNodeId(self) -> Any: ...
    def onOneSecondTimer(self) -> None: ...
    def flush(self) -> object: ...


@dataclass
class _PatchState:
    """Per-SyncObj state of the stateful fixes (created before pysyncobj's own __init__)."""

    # Leader: lowest reject hint per follower since its last success (B1).
    probe_floor: dict[Any, int] = field(default_factory=dict)
    # Follower: the hint to put in the reject being sent for the current message (B1).
    hint_override: int | None = None
    # Leader: the read tag to put on every AppendEntries (0: none yet), whether one left.
    read_tag: int = 0
    read_tag_sent: bool = False
    # Leader: node id -> the highest read tag that follower echoed in this term.
    read_echo: dict[str, int] = field(default_factory=dict)
    # Follower: the read tag of the AppendEntries being answered.
    echo_tag: int | None = None


# --------------------------------------------------------------------------- switches


def is_enabled(name: str) -> bool:
    """Whether patch `name` is active (all are, unless a test switched one off)."""
    return _enabled[name]


@contextlib.contextmanager
def patch_enabled(name: str, enabled: bool) -> Iterator[None]:
    """Switch patch `name` on or off for the duration of the block (process-wide)."""
    if name not in _enabled:
        raise ValueError(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
    with _lock:
        previous = _enabled[name]
        _set(name, enabled)
    try:
        yield
    finally:
        with _lock:
            _set(name, previous)


def _set(name: str, enabled: bool) -> None:
    _enabled[name] = enabled
    if name == "pickle5":
        # pysyncobj.pickle reads this module global on every dump (journal meta included).
        setattr(pysyncobj.pickle, "__protocol", 5 if enabled else 2)


# --------------------------------------------------------------------------- test seam


@contextlib.contextmanager
def simulated_time(clock: Callable[[], float], rng: random.Random) -> Iterator[None]:
    """Test seam (gcs_ha/testing/raft_sim.py): for the duration of the block, pysyncobj's
    SyncObj and this module's patches read `clock` instead of time.monotonic and draw
    their random timeouts from `rng`. Process-wide: create, tick and destroy the
    SyncObjs inside the block, and run no other SyncObj meanwhile."""
    global _clock, _rng
    module = pysyncobj.syncobj
    saved = (_clock, _rng, module.monotonicTime, module.random)
    _clock, _rng = clock, rng
    module.monotonicTime, module.random = clock, rng
    try:
        yield
    finally:
        _clock, _rng, module.monotonicTime, module.random = saved


# --------------------------------------------------------------------------- pickle


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals in _SAFE_GLOBALS; anything else is an UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")


def restricted_loads(data: bytes) -> Any:
    """Unpickle data that may come from an untrusted peer: no code can run."""
    return _AllowListUnpickler(io.BytesIO(data)).load()


class _PickleShim:
    """Stands in for `pysyncobj.pickle` inside syncobj.py and tcp_connection.py."""

    @staticmethod
    def dumps(obj: Any, protocol: int | None = None) -> bytes:
        dumped: bytes = pysyncobj.pickle.dumps(obj)
        return dumped

    @staticmethod
    def loads(data: bytes | str) -> Any:
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        if _enabled["safe_unpickle"]:
            return restricted_loads(raw)
        return pysyncobj.pickle.loads(raw)


class _ZlibShim:
    """Stands in for `zlib` inside tcp_connection.py: our level, bounded decompression."""

    @staticmethod
    def compress(data: bytes, level: int = 3) -> bytes:
        return zlib.compress(data, COMPRESS_LEVEL if _enabled["compress_level"] else level)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        if not _enabled["frame_limit"]:
            return zlib.decompress(data)
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, MAX_FRAME_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError("frame inflates beyond MAX_FRAME_BYTES or is truncated")
        return out


# --------------------------------------------------------------------------- helpers


def _state(sync_obj: Any) -> _PatchState | None:
    found: _PatchState | None = getattr(sync_obj, "_gcsha_patch_state", None)
    return found


def _flush_journal(sync_obj: Any) -> None:
    """Call the journal's flush() if it has one (our DurableJournal: fsync if dirty)."""
    flush = getattr(sync_obj._SyncObj__raftLog, "flush", None)
    if flush is not None:
        flush()


def _is_durable_reply(message: Any) -> bool:
    """An append ack or a vote grant: what the receiver may count toward a majority."""
    if not isinstance(message, dict):
        return False
    kind = message.get("type")
    return kind == "response_vote" or (kind == "next_node_idx" and bool(message.get("success")))


def _is_reset_reject(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and message.get("type") == "next_node_idx"
        and not message.get("success")
        and bool(message.get("reset"))
    )


def _conflict_hint(sync_obj: Any, message: dict[str, Any]) -> int | None:
    """On a follower, the nextIndex to suggest when `message` mismatches at prevLogIdx.

    Raft's accelerated back-off: the first index of the conflicting term in our log, but
    never at or below our commit index (those entries match every leader, and staying
    above it keeps the probe above any later compaction point) and never above prevLogIdx.
    None when the message is not a term mismatch.
    """
    if message.get("term", -1) < sync_obj._SyncObj__raftCurrentTerm:
        return None
    if "prevLogIdx" not in message or message.get("transmission") in ("start", "process"):
        return None
    prev = message["prevLogIdx"]
    log = sync_obj._SyncObj__raftLog
    first, last = log[0][1], log[-1][1]
    if prev is None or not first <= prev <= last:
        return None
    conflict_term = log[prev - first][2]
    if conflict_term == message.get("prevLogTerm"):
        return None
    lo, hi = 0, prev - first  # terms never decrease along a Raft log: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if log[mid][2] < conflict_term:
            lo = mid + 1
        else:
            hi = mid
    hint = max(first + lo, sync_obj._SyncObj__raftCommitIndex + 1, first + 1)
    return int(min(hint, prev))


# --------------------------------------------------------------------------- wrappers
# Each wrapper calls the original it replaced, kept in _ORIG under the same key. The
# SyncObj ones are installed on the class before any instance exists: pysyncobj binds its
# callbacks (self.__onMessageReceived, ...) in __init__, so the bound methods are ours.

_ORIG: dict[str, Any] = {}


def _so_init(self: Any, *args: Any, **kwargs: Any) -> None:
    # Before pysyncobj snapshots its attribute names, so its dumps never carry our state.
    self._gcsha_patch_state = _PatchState()
    _ORIG["init"](self, *args, **kwargs)


def _so_on_message(self: Any, node: Any, message: Any) -> None:
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "next_node_idx" and self._SyncObj__raftState == RAFT_LEADER:
        _leader_on_ack(self, node, message)
    elif kind == "append_entries":
        _follower_on_append(self, node, message)
    else:
        _ORIG["on_message"](self, node, message)


def _so_on_tick(self: Any, timeToWait: float = 0.0) -> None:
    # `self` is a weakref proxy here (pysyncobj's tick thread); attribute access works.
    if _enabled["flush_leader_tick"] and self._SyncObj__raftState == RAFT_LEADER:
        _flush_journal(self)
    if _enabled["quiet_joiner"] and _unjoined(self):
        self._SyncObj__raftElectionDeadline = _clock() + self.conf.raftMinTimeout
    _ORIG["on_tick"](self, timeToWait)


def _unjoined(self: Any) -> bool:
    """A joiner that no leader has given a log entry or snapshot yet: its log is pysyncobj's
    first entry alone (index 1). It can win no election (every member's log is longer), so
    standing for one could only raise its term and, later, unseat the leader."""
    joining = getattr(self.conf, JOINING_ATTRIBUTE, False)
    return bool(joining) and self._SyncObj__getCurrentLogIndex() <= 1


def _so_become_leader(self: Any) -> None:
    state = _state(self)
    if state is not None:
        state.probe_floor.clear()
        state.read_echo.clear()
    _ORIG["become_leader"](self)
    if _enabled["flush_leader_tick"]:
        _flush_journal(self)  # the no-op; a 1-node cluster commits it in this very tick


def _so_check_commands(self: Any) -> None:
    """Append and send queued commands; then a leader fsyncs them while followers work."""
    _ORIG["check_commands"](self)
    if _enabled["flush_after_send"] and self._SyncObj__raftState == RAFT_LEADER:
        _flush_journal(self)


def _so_apply_log_entries(self: Any) -> bool:
    """Apply committed entries; with ``no_commit_only_append`` never ask for an extra
    AppendEntries just to carry the new commit index."""
    needs_send: bool = _ORIG["apply_log_entries"](self)
    return False if _enabled["no_commit_only_append"] else needs_send


def _so_node_connected(self: Any, node: Any) -> None:
    _forget_probe(self, node)
    _ORIG["node_connected"](self, node)


def _so_node_disconnected(self: Any, node: Any) -> None:
    _forget_probe(self, node)
    _ORIG["node_disconnected"](self, node)
    gone = self._SyncObj__raftState == RAFT_FOLLOWER and self._SyncObj__raftLeader == node
    if gone and _enabled["leader_gone"]:
        others = (str(n.id) for n in self._SyncObj__otherNodes)
        delay = leader_gone_delay(str(self._SyncObj__selfNode.id), others, str(node.id))
        logger.info("the link to leader %s closed: election in %.0f ms", node, delay * 1000)
        soon = _clock() + delay
        self._SyncObj__raftElectionDeadline = min(self._SyncObj__raftElectionDeadline, soon)


def _so_apply_command(self: Any, command: bytes, callback: Any, commandType: Any = None) -> None:
    """B3 guard: no command may reach appendEntriesBatchSizeBytes (the chunked path)."""
    size = len(command) + (0 if commandType is None else 1)
    limit = self.conf.appendEntriesBatchSizeBytes
    if _enabled["b3_entry_guard"] and size >= limit:
        if isinstance(callback, tuple):  # forwarded by a follower: answer it, never raise
            self._SyncObj__callErrCallback(FAIL_REASON.REQUEST_DENIED, callback)
            return
        raise InvalidRequestError(f"command of {size} bytes reaches the batch size {limit}")
    _ORIG["apply_command"](self, command, callback, commandType)


def _so_change_cluster(self: Any, request: Any) -> bool:
    """Leader, appending a membership entry: arm pysyncobj's one-change-at-a-time guard.

    pysyncobj refuses a change while `__changeClusterIDx` is above the last applied index
    but never sets it; the entry being accepted goes at the next log index."""
    accepted: bool = _ORIG["change_cluster"](self, request)
    if accepted and _enabled["one_config_change"]:
        self._SyncObj__changeClusterIDx = self._SyncObj__getCurrentLogIndex() + 1
    return accepted


def _forget_probe(sync_obj: Any, node: Any) -> None:
    state = _state(sync_obj)
    if state is not None:
        state.probe_floor.pop(node, None)


def _leader_on_ack(sync_obj: Any, node: Any, message: dict[str, Any]) -> None:
    """The leader's handling of a follower's `next_node_idx` reply, with fixes B1 and B2.

    B2: pysyncobj sets nextIndex = acked + 1 on every success, pulling it back below entries
    it already pipelined, so they are sent again and the follower truncates acked entries.
    B1: after a probe (lower nextIndex) the follower also rejects the batches pipelined in
    the same tick with "my last + 1", which undid the probe every tick, forever.
    """
    state = _state(sync_obj)
    next_index = sync_obj._SyncObj__raftNextIndex
    tag = message.get(READ_TAG_KEY)
    if state is not None and isinstance(tag, int) and _enabled["read_echo"]:
        node_id = str(node.id)
        if tag > state.read_echo.get(node_id, 0):
            state.read_echo[node_id] = tag
    if message.get("success"):
        if state is not None:
            state.probe_floor.pop(node, None)
        before = next_index.get(node)
        _ORIG["on_message"](sync_obj, node, message)
        after = next_index.get(node, 0)
        if _enabled["b2_monotonic_next"] and before is not None and after < before:
            next_index[node] = before
        return
    if message.get("reset") and state is not None and _enabled["b1_probe_floor"]:
        hint = message["next_node_idx"]
        floor = state.probe_floor.get(node)
        if floor is not None and hint > floor:
            message = {**message, "reset": False}  # stale: count it as a sign of life only
        else:
            state.probe_floor[node] = hint
    _ORIG["on_message"](sync_obj, node, message)


def _follower_on_append(sync_obj: Any, node: Any, message: dict[str, Any]) -> None:
    """Handle append_entries; a term mismatch is answered with `_conflict_hint` (B1), and
    the answer carries the message's read tag back (``read_echo``)."""
    state = _state(sync_obj)
    if state is None:
        _ORIG["on_message"](sync_obj, node, message)
        return
    if _enabled["b1_conflict_hint"]:
        state.hint_override = _conflict_hint(sync_obj, message)
    tag = message.get(READ_TAG_KEY)
    state.echo_tag = tag if isinstance(tag, int) and _enabled["read_echo"] else None
    try:
        _ORIG["on_message"](sync_obj, node, message)
    finally:
        state.hint_override = None
        state.echo_tag = None


def outgoing(sync_obj: Any, message: Any) -> Any:
    """What every transport does to a message of `sync_obj` before it leaves: flush the
    journal before a durable reply (an ack, a vote); put our fields on it (the B1 hint in
    a reject, a read tag or its echo). Returns the message to send. TCPTransport.send
    calls it; a simulated transport (gcs_ha/testing/raft_sim.py) calls it too."""
    if _enabled["flush_before_ack"] and _is_durable_reply(message):
        _flush_journal(sync_obj)
    state = _state(sync_obj)
    if state is not None:
        message = _with_patch_fields(sync_obj, state, message)
    return message


def _transport_send(self: Any, node: Any, message: Any) -> bool:
    """Flush before a durable reply leaves; put the conflict hint into a reject."""
    sent: bool = _ORIG["send"](self, node, outgoing(self._syncObj, message))
    return sent


def _with_patch_fields(sync_obj: Any, state: _PatchState, message: Any) -> Any:
    """The message with our fields: the B1 hint in a reject, a read tag or its echo."""
    if not isinstance(message, dict):
        return message
    kind = message.get("type")
    if kind == "next_node_idx":
        if state.hint_override is not None and _is_reset_reject(message):
            message = {**message, "next_node_idx": state.hint_override}
        if state.echo_tag is not None:
            message = {**message, READ_TAG_KEY: state.echo_tag}
    elif (
        kind == "append_entries"
        and state.read_tag
        and _enabled["read_echo"]
        and sync_obj._SyncObj__raftState == RAFT_LEADER
    ):
        message = {**message, READ_TAG_KEY: state.read_tag}
        state.read_tag_sent = True
    return message


def _transport_on_incoming(self: Any, conn: Any) -> None:
    """pysyncobj sets TCP keepalive only on sockets it connects; also on accepted ones.
    An accepted connection is untrusted until its handshake ends (``untrusted_limits``)."""
    if _enabled["untrusted_limits"]:
        conn._gcsha_untrusted_since = _clock()
        if len(self._unknownConnections) >= MAX_UNTRUSTED_CONNECTIONS:
            logger.warning("too many Raft connections in their handshake; closing a new one")
            conn.disconnect()
            return
    _ORIG["on_incoming"](self, conn)
    keepalive = self._syncObj.conf.tcp_keepalive
    if _enabled["link_keepalive"] and keepalive is not None:
        conn._TcpConnection__keepalive = keepalive
        conn.setSockoptKeepalive()


def _transport_on_incoming_message(self: Any, conn: Any, message: Any) -> None:
    """Once the handshake associated `conn` with a peer, it is trusted."""
    _ORIG["on_incoming_message"](self, conn, message)
    if conn not in self._unknownConnections:
        conn._gcsha_untrusted_since = None


def _transport_on_tick(self: Any) -> None:
    """Close accepted connections whose handshake outlived HANDSHAKE_TIMEOUT_S."""
    if _enabled["untrusted_limits"]:
        deadline = _clock() - HANDSHAKE_TIMEOUT_S
        for conn in list(self._unknownConnections):
            since = getattr(conn, "_gcsha_untrusted_since", None)
            if since is not None and since < deadline:
                logger.warning("a Raft connection did not finish its handshake; closing it")
                self._unknownConnections.discard(conn)
                conn.disconnect()
    _ORIG["transport_tick"](self)


def _frame_limit(conn: Any, pos: int) -> int:
    """The largest frame the header at buffer position `pos` may announce. Before the
    handshake ended, the next frame to be parsed (at 0) is a handshake frame: small. It
    is parsed (and an impostor's fails to decrypt: disconnected) as soon as it is
    complete; a legitimate peer may send large frames right behind its last one."""
    untrusted = getattr(conn, "_gcsha_untrusted_since", None) is not None
    if pos == 0 and untrusted and _enabled["untrusted_limits"]:
        return HANDSHAKE_FRAME_BYTES
    return MAX_FRAME_BYTES


def _conn_process_read(self: Any) -> bool:
    """After each recv, check every frame header now in the buffer against the limit.

    `_gcsha_scan` is where the next unchecked header starts; it only lives within one read
    loop (the buffer only grows then), and restarts at 0 when the parser takes over.
    """
    got: bool = _ORIG["process_read"](self)
    if not got or not _enabled["frame_limit"]:
        self._gcsha_scan = 0
        return got
    buf = self._TcpConnection__readBuffer
    pos = getattr(self, "_gcsha_scan", 0)
    while pos + 4 <= len(buf):
        (size,) = struct.unpack_from("i", buf, pos)
        if not 0 <= size <= _frame_limit(self, pos):
            logger.warning("peer announced a %d-byte frame; disconnecting it", size)
            self._gcsha_scan = 0
            self.disconnect()
            return False
        pos += 4 + size
    self._gcsha_scan = pos
    return True


def _conn_set_keepalive(self: Any) -> None:
    """Keepalive plus TCP_USER_TIMEOUT, so a link with unacknowledged data also dies."""
    _ORIG["set_keepalive"](self)
    keepalive = self._TcpConnection__keepalive
    sock = self._TcpConnection__socket
    if not _enabled["link_keepalive"] or keepalive is None or sock is None:
        return
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        idle, interval, probes = keepalive
        sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, (idle + interval * probes) * 1000
        )


def _conn_connect(self: Any, host: str, port: int) -> bool:
    """Dial the relay GCS_HA_RAFT_DIAL names for (host, port) instead, if any (drills).

    Only the socket's far end changes: the transport still knows the peer by its real
    address and sends its own real address once connected, so both ends keep their
    identities and a relay in between is invisible to Raft.
    """
    relay = _dial_map.get((host, port))
    if relay is not None:
        host, port = relay
    connected: bool = _ORIG["connect"](self, host, port)
    return connected


def _serializer_set_transmission_data(self: Any, data: Any) -> bool:
    """Receive one chunk of a snapshot; True once the whole file replaced the dump.
    ``durable_snapshot_receive``: fsync, check, rename, fsync the directory."""
    dump = self._Serializer__fileName
    if not _enabled["durable_snapshot_receive"] or dump is None or data is None:
        return bool(_ORIG["set_transmission_data"](self, data))
    chunk, is_first, is_last = data
    tmp = Path(dump + ".1.tmp")
    if is_first:
        _drop_incoming(self, None)
        try:
            self._Serializer__incomingTransmissionFile = open(tmp, "wb")  # noqa: SIM115
        except OSError:
            logger.exception("cannot open %s for a received snapshot", tmp)
            return False
    f = self._Serializer__incomingTransmissionFile
    if f is None:
        return False
    try:
        f.write(chunk)
        if not is_last:
            return False
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._Serializer__incomingTransmissionFile = None
        _check_received(tmp)
        os.replace(tmp, dump)
        fsync_dir(tmp.parent)
    except (OSError, GcsHaError) as exc:
        logger.error("received snapshot not installed (%s); the leader will send it again", exc)
        _drop_incoming(self, tmp)
        return False
    return True


def _drop_incoming(serializer: Any, tmp: Path | None) -> None:
    f = serializer._Serializer__incomingTransmissionFile
    serializer._Serializer__incomingTransmissionFile = None
    if f is not None:
        f.close()
    if tmp is not None:
        tmp.unlink(missing_ok=True)


def _check_received(path: Path) -> None:
    """A gcs-ha snapshot must be whole and match its digest (CorruptDataError); files of
    other formats (pysyncobj's own, in tests) are not checked."""
    with open(path, "rb") as f:
        magic = f.read(len(SNAPSHOT_MAGIC))
    if magic == SNAPSHOT_MAGIC:
        verify_snapshot(path)


def _create_journal(journal_file: Any = None) -> Any:
    """A journal object (with `add` and `flush`) passed as journalFile is used as is."""
    injected = hasattr(journal_file, "add") and hasattr(journal_file, "flush")
    if injected and _enabled["journal_injection"]:
        return journal_file
    return _ORIG["create_journal"](journal_file)


# (owner, attribute, key in _ORIG, replacement)
_REPLACEMENTS: Final[tuple[tuple[Any, str, str, Any], ...]] = (
    (SyncObj, "__init__", "init", _so_init),
    (SyncObj, "_SyncObj__onMessageReceived", "on_message", _so_on_message),
    (SyncObj, "_onTick", "on_tick", _so_on_tick),
    (SyncObj, "_SyncObj__onBecomeLeader", "become_leader", _so_become_leader),
    (SyncObj, "_SyncObj__onNodeConnected", "node_connected", _so_node_connected),
    (SyncObj, "_SyncObj__onNodeDisconnected", "node_disconnected", _so_node_disconnected),
    (SyncObj, "_applyCommand", "apply_command", _so_apply_command),
    (SyncObj, "_checkCommandsToApply", "check_commands", _so_check_commands),
    (SyncObj, "_SyncObj__applyLogEntries", "apply_log_entries", _so_apply_log_entries),
    (SyncObj, "_SyncObj__changeCluster", "change_cluster", _so_change_cluster),
    (pysyncobj.transport.TCPTransport, "send", "send", _transport_send),
    (
        pysyncobj.transport.TCPTransport,
        "_onNewIncomingConnection",
        "on_incoming",
        _transport_on_incoming,
    ),
    (
        pysyncobj.transport.TCPTransport,
        "_onIncomingMessageReceived",
        "on_incoming_message",
        _transport_on_incoming_message,
    ),
    (pysyncobj.transport.TCPTransport, "_onTick", "transport_tick", _transport_on_tick),
    (
        pysyncobj.tcp_connection.TcpConnection,
        "_TcpConnection__processRead",
        "process_read",
        _conn_process_read,
    ),
    (
        pysyncobj.tcp_connection.TcpConnection,
        "setSockoptKeepalive",
        "set_keepalive",
        _conn_set_keepalive,
    ),
    (pysyncobj.tcp_connection.TcpConnection, "connect", "connect", _conn_connect),
    (pysyncobj.syncobj, "createJournal", "create_journal", _create_journal),
    (
        pysyncobj.serializer.Serializer,
        "setTransmissionData",
        "set_transmission_data",
        _serializer_set_transmission_data,
    ),
    (pysyncobj.syncobj, "pickle", "syncobj_pickle", _PickleShim),
    (pysyncobj.tcp_connection, "pickle", "conn_pickle", _PickleShim),
    (pysyncobj.tcp_connection, "zlib", "conn_zlib", _ZlibShim),
)


def apply_patches() -> None:
    """Install every patch once (idempotent, thread-safe). Runs at import of this module."""
    with _lock:
        if _ORIG:
            return
        _set("pickle5", _enabled["pickle5"])
        for owner, attribute, key, replacement in _REPLACEMENTS:
            _ORIG[key] = getattr(owner, attribute)
            setattr(owner, attribute, replacement)


# --------------------------------------------------------------------------- read tags


def set_read_tag(sync_obj: Any, tag: int) -> None:
    """Leader: put `tag` on every AppendEntries from now on (ReadIndex). Tags must grow."""
    state = _state(sync_obj)
    if state is not None:
        state.read_tag = tag
        state.read_tag_sent = False


def read_tag_sent(sync_obj: Any) -> bool:
    """Whether an AppendEntries with the current read tag has left since it was set."""
    state = _state(sync_obj)
    return state is not None and state.read_tag_sent


def read_echoes(sync_obj: Any) -> dict[str, int]:
    """Leader: node id -> the highest read tag that follower echoed since this node last
    became leader. A follower echoes only a message of a term it accepts as current."""
    state = _state(sync_obj)
    return {} if state is None else state.read_echo


# --------------------------------------------------------------------------- dial map


def parse_dial_map(text: str) -> dict[tuple[str, int], tuple[str, int]]:
    """Parse "peer_host:port=relay_host:port,..." (blanks ignored). ConfigError if malformed.

    Hosts are matched as pysyncobj dials them: write IP literals, as in the peer list.
    """
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        peer, sep, relay = item.partition("=")
        if not sep:
            raise ConfigError(f"{RAFT_DIAL_ENV}: expected peer=relay, got {item!r}")
        out[_host_port(peer)] = _host_port(relay)
    return out


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{RAFT_DIAL_ENV}: bad host:port {address!r}")
    return host, int(port)


def load_dial_map(environ: Mapping[str, str] | None = None) -> None:
    """(Re)read GCS_HA_RAFT_DIAL from `environ` (default os.environ) for this process.

    Testing and drills only; a warning is logged when it is set. ConfigError if malformed.
    """
    text = (os.environ if environ is None else environ).get(RAFT_DIAL_ENV, "")
    parsed = parse_dial_map(text)  # before touching the map: a bad value changes nothing
    if parsed == _dial_map:
        return  # every replica start re-reads it: leave a running node's map untouched
    _dial_map.clear()
    _dial_map.update(parsed)
    if _dial_map:
        pairs = ", ".join(f"{p[0]}:{p[1]} via {r[0]}:{r[1]}" for p, r in _dial_map.items())
        logger.warning("%s set (testing only): Raft peers dialed %s", RAFT_DIAL_ENV, pairs)


# --------------------------------------------------------------------------- settings


def make_conf(
    *,
    bind_address: str,
    password: str | bytes | None,
    insecure: bool = False,
    journal: RaftJournal | None = None,
    full_dump_file: str | None = None,
    serializer: Callable[[str, Any], None] | None = None,
    deserializer: Callable[[str], Any] | None = None,
    serialize_checker: Callable[[], int] | None = None,
    on_state_changed: Callable[[int, int], None] | None = None,
    timing: RaftTiming | None = None,
    log_compaction_min_entries: int = 20_000,
    log_compaction_min_time_s: float = 3600.0,
    batch_size_bytes: int = BATCH_SIZE_BYTES,
    auto_tick: bool = True,
    joining: bool = False,
) -> Any:
    """Our SyncObjConf (measured in pysyncobj-facts.md section 8), with every patch applied.

    bind_address: this node's own Raft "host:port" (pysyncobj would bind 0.0.0.0).
    password: the cluster secret; required unless `insecure` (then peers are not
    authenticated, though frames still cannot run code). Raises ConfigError.
    Also (re)reads GCS_HA_RAFT_DIAL (`load_dial_map`): a replica reads it as it starts.
    auto_tick: False when the caller ticks the node itself (the consensus process); the
    port is then bound in SyncObj's constructor, which gives up after a few tries.
    joining: the node joins a running cluster (patch ``quiet_joiner``).
    """
    apply_patches()
    load_dial_map()
    if password is None and not insecure:
        raise ConfigError("a cluster secret is required (or run insecure explicitly)")
    host, _, port = bind_address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"bind address must be host:port, got {bind_address!r}")
    t = timing or RaftTiming()
    conf = SyncObjConf(
        password=password,
        bindAddress=bind_address,
        journalFile=journal,
        fullDumpFile=full_dump_file,
        serializer=serializer,
        deserializer=deserializer,
        serializeChecker=serialize_checker,
        onStateChanged=on_state_changed,
        raftMinTimeout=t.election_min_s,
        raftMaxTimeout=t.election_max_s,
        appendEntriesPeriod=t.heartbeat_s,
        leaderFallbackTimeout=t.leader_fallback_s,
        autoTickPeriod=t.tick_s,
        connectionRetryTime=t.reconnect_s,
        connectionTimeout=LINK_TIMEOUT_S,
        dnsCacheTime=DNS_CACHE_S,
        dnsFailCacheTime=DNS_FAIL_CACHE_S,
        tcp_keepalive=TCP_KEEPALIVE,
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=batch_size_bytes,
        logCompactionMinEntries=log_compaction_min_entries,
        logCompactionMinTime=log_compaction_min_time_s,
        logCompactionBatchSize=2**20,
        sendBufferSize=SOCKET_BUFFER_BYTES,
        recvBufferSize=SOCKET_BUFFER_BYTES,
        dynamicMembershipChange=True,
        commandsWaitLeader=False,
        useFork=False,  # never fork a multi-threaded process
        autoTick=auto_tick,
        maxBindRetries=0 if auto_tick else 3,
        bindRetryTime=1.0 if auto_tick else 0.1,
    )
    setattr(conf, JOINING_ATTRIBUTE, joining)
    try:
        conf.validate()
    except AssertionError as exc:
        raise ConfigError(f"invalid Raft settings: {t}") from exc
    return conf


apply_patches()
