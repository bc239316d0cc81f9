"""The stream between a replica's front end and its consensus process.

Frames (`u32 body length | u8 kind | u64 id | body`) go both ways, in order, over one
AF_UNIX socketpair; `FrameReader` splits a byte stream into frames. The kinds and their
bodies: DESIGN.md, "The frames (ipc.py)".

Errors: CorruptDataError from `FrameReader.feed` for a frame that announces more than
MAX_BODY_BYTES or an unknown kind (the stream cannot be trusted after it: close it).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Final

from gcs_ha.errors import CorruptDataError

HEADER: Final = struct.Struct("<IBQ")
ROLE_BODY: Final = struct.Struct("<BBQ")  # old state, new state, term
MAX_BODY_BYTES: Final = 128 * 2**20
"""Larger than any legal log entry (the proposer caps them far below)."""


class Kind(IntEnum):
    """Frame kinds. 1-63: front end -> consensus; 64+: consensus -> front end."""

    CONFIG = 1  # the replica's configuration (JSON), first frame of the stream
    PROPOSE = 2  # append this log entry
    READ = 3  # confirm leadership for a linearizable read (ReadIndex)
    ADD_NODE = 4
    REMOVE_NODE = 5
    TRANSFER = 6  # hand leadership over (empty body: to any caught-up follower)
    COMPACT = 7  # snapshot now and compact the log
    STOP = 8  # stop cleanly and exit
    PING = 9  # the front end's loop is alive
    METRICS = 10  # send this process's metrics (answered by METRICS_TEXT, same id)
    READY = 64  # started (JSON: the node's first status)
    START_FAILED = 65  # could not start (JSON: error class name and message); exits next
    DONE = 66  # completions (raft_ipc.Completions)
    ROLE = 67  # the Raft role changed (ROLE_BODY), sent the moment it happens
    STATUS = 68  # a status snapshot (JSON), every STATUS_PERIOD_S
    ENV_REPLACED = 69  # LMDB was replaced by a snapshot image: reopen it
    METRICS_TEXT = 70  # the metrics asked for by METRICS (Prometheus text format)


_KINDS: Final = frozenset(int(k) for k in Kind)


class Reason(IntEnum):
    """Completion.reason. 0-7 are pysyncobj's FAIL_REASON codes (same values; a test
    checks them), 100+ are ours."""

    SUCCESS = 0
    QUEUE_FULL = 1
    MISSING_LEADER = 2
    DISCARDED = 3
    NOT_LEADER = 4
    LEADER_CHANGED = 5
    REQUEST_DENIED = 6
    UNKNOWN_OUTCOME = 7
    REFUSED = 100  # the request can never succeed as sent (message says why)
    FAILED = 101  # the consensus process failed to do it (message says why)


def frame(kind: Kind, request_id: int = 0, body: bytes = b"") -> bytes:
    """One frame, ready to send."""
    return HEADER.pack(len(body), kind, request_id) + body


Frame = tuple[Kind, int, bytes]


class FrameReader:
    """Cuts a byte stream into frames. Feed it what recv returned, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data` (possibly none); CorruptDataError on junk."""
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        while len(buf) - pos >= HEADER.size:
            length, kind, request_id = HEADER.unpack_from(buf, pos)
            if length > MAX_BODY_BYTES or kind not in _KINDS:
                raise CorruptDataError(f"bad frame header: length {length}, kind {kind}")
            end = pos + HEADER.size + length
            if end > len(buf):
                break
            frames.append((Kind(kind), request_id, bytes(buf[pos + HEADER.size : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf)


def encode_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def decode_json(body: bytes) -> dict[str, Any]:
    """A JSON object; CorruptDataError for anything else."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise CorruptDataError(f"bad JSON frame body: {exc}") from exc
    if not isinstance(doc, dict):
        raise CorruptDataError("a JSON frame body must be an object")
    return doc


@dataclass(frozen=True)
class RaftStatus:
    """A consistent copy of the Raft node's state, taken in the consensus process.

    `taken_at` is CLOCK_MONOTONIC, which is system wide: comparable across processes.
    """

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
    snapshots: int = 0  # snapshots this process started writing

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc["peers"] = list(self.peers)
        doc["connected"] = sorted(self.connected)
        return encode_json(doc)

    @classmethod
    def from_json(cls, body: bytes) -> RaftStatus:
        doc = decode_json(body)
        try:
            return cls(
                state=int(doc["state"]),
                term=int(doc["term"]),
                leader=None if doc["leader"] is None else str(doc["leader"]),
                commit_index=int(doc["commit_index"]),
                last_applied=int(doc["last_applied"]),
                log_length=int(doc["log_length"]),
                last_log_index=int(doc["last_log_index"]),
                has_quorum=bool(doc["has_quorum"]),
                self_address=str(doc["self_address"]),
                peers=tuple(str(p) for p in doc["peers"]),
                match_index={str(k): int(v) for k, v in doc["match_index"].items()},
                connected=frozenset(str(c) for c in doc["connected"]),
                taken_at=float(doc["taken_at"]),
                snapshots=int(doc.get("snapshots", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptDataError(f"bad status frame: {exc}") from exc
