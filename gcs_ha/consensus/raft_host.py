"""A replica's consensus process: Raft, the journal, the state machine (LMDB's only
writer) and snapshots, serving the replica's front end over one socket (ipc.py).

One thread does everything, in `RaftNode.tick()`; the front end's socket is one more
descriptor in pysyncobj's poller. What the end of each tick does (`_after_tick`) and in
which order: DESIGN.md, "The consensus process's tick". The process lives as long as its
front end: EOF on the socket stops it cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus import ipc, recovery
from gcs_ha.consensus.config import ReplicaConfig, config_from_doc
from gcs_ha.consensus.ipc import Kind, Reason, frame
from gcs_ha.consensus.journal import DurableJournal
from gcs_ha.consensus.metrics import ConsensusMetrics
from gcs_ha.consensus.raft_endpoint import Endpoint
from gcs_ha.consensus.raft_node import RaftNode
from gcs_ha.consensus.read_index import ReadIndex
from gcs_ha.consensus.snapshot import read_header
from gcs_ha.consensus.snapshotter import Snapshotter
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import ConfigError, CorruptDataError, GcsHaError
from gcs_ha.proto import raft_ipc_pb2 as ipc_pb
from gcs_ha.storage.lmdb_env import LmdbEnv

logger = logging.getLogger(__name__)

STATUS_PERIOD_S = 0.05
COMPACTION_START_WAIT_S = 2.0
BYTE_COMPACTION_GAP_S = 1.0  # at most one compaction for size per second
FATAL_EXIT_CODE = 70


def fatal(what: str, exc: BaseException) -> None:
    """A replica that cannot keep its state exact must stop, not diverge."""
    logger.critical("FATAL: %s: %r; stopping this replica", what, exc, exc_info=exc)
    logging.shutdown()
    os._exit(FATAL_EXIT_CODE)


@dataclass
class _Compaction:
    request_id: int
    started_before: int
    start_deadline: float


@dataclass
class _Parts:
    """What `_start` builds, torn down in reverse by `_shutdown`."""

    env: LmdbEnv
    sm: LmdbStateMachine
    journal: DurableJournal
    snapshotter: Snapshotter
    node: RaftNode


class RaftHost:
    """The consensus process's work, over the socket `sock` to its front end."""

    def __init__(self, sock: socket.socket) -> None:
        self._endpoint = Endpoint(sock, self._on_frame, self._on_front_end_gone)
        self._parts: _Parts | None = None
        self._done: list[ipc_pb.Completion] = []
        self._reads = ReadIndex()
        self._compactions: list[_Compaction] = []
        self._next_byte_compaction = 0.0
        self._compaction_min_bytes = 0
        self._stopping = False
        self._status_due = 0.0
        self._metrics = ConsensusMetrics()

    def run(self, configure_logging: Callable[[str, str], None]) -> int:
        """Read the config, start, serve until STOP or EOF, stop cleanly. Exit code."""
        doc = self._endpoint.read_config()
        config = _config_from(doc)
        configure_logging(config.node_id, str(doc.get("log_level", "INFO")))
        try:
            self._parts = self._start(config)
        except GcsHaError as exc:
            logger.error("cannot start: %s", exc)
            body = ipc.encode_json({"error": type(exc).__name__, "message": str(exc)})
            self._endpoint.send_now(frame(Kind.START_FAILED, body=body))
            return 1
        node = self._parts.node
        self._endpoint.attach(node.poller)
        self._endpoint.send(frame(Kind.READY, body=node.status().to_json()))
        while not self._stopping:
            self._tick(self._parts)
        self._shutdown(self._parts)
        return 0

    def _tick(self, parts: _Parts) -> None:
        """One tick. A journal write that failed inside it (a follower appending what its
        leader sent, with the disk full or failing) raises out of pysyncobj: that is the
        fatal journal failure, exit 70, like one found after the tick."""
        try:
            parts.node.tick()
        except Exception as exc:
            if parts.journal.failure is not None and not self._stopping:
                fatal("the Raft journal failed", exc)
            raise
        self._endpoint.flush()

    # -- start and stop ---------------------------------------------------------------

    def _start(self, config: ReplicaConfig) -> _Parts:
        ps.apply_patches()
        self._compaction_min_bytes = config.compaction_min_bytes
        lmdb_dir, raft_dir = config.data_dir / "lmdb", config.data_dir / "raft"
        raft_dir.mkdir(parents=True, exist_ok=True)
        dump = raft_dir / "snapshot"
        _check_dump(dump)
        env = recovery.open_for_writing(lmdb_dir, dump, config.map_size_bytes)
        try:
            metrics = self._metrics
            sm = LmdbStateMachine(
                env,
                fatal,
                observe_apply=metrics.observe_apply,
                observe_commit=metrics.observe_commit,
            )
            journal = DurableJournal(raft_dir / "journal", metrics.observe_fsync)
        except BaseException:
            env.close()
            raise
        snapshotter = Snapshotter(
            sm,
            lmdb_dir,
            dump,
            lambda: LmdbEnv(
                lmdb_dir, sync=False, metasync=False, map_size=config.map_size_bytes
            ),
            ps.TCPNode,
            on_installed=lambda: self._endpoint.send(frame(Kind.ENV_REPLACED)),
            on_fatal=fatal,
            observe_save=metrics.observe_snapshot_save,
            observe_install=metrics.observe_snapshot_apply,
        )
        metrics.watch_journal(lambda: journal.size_bytes)
        try:
            conf = _conf(config, journal, dump, snapshotter, self._on_state_changed)
            node = RaftNode(sm, config.raft_address, list(config.peers), conf)
        except BaseException:
            journal.close()
            sm.env.close()
            raise
        node.add_tick_callback(self._after_tick)
        logger.info(
            "consensus started (raft %s, peers %s, LMDB applied %d; %s)",
            config.raft_address,
            list(config.peers),
            sm.applied_index,
            _timing_of(node.sync_obj.conf),
        )
        return _Parts(env, sm, journal, snapshotter, node)

    def _shutdown(self, parts: _Parts) -> None:
        parts.node.stop()  # Raft sockets closed, journal closed
        parts.snapshotter.wait()
        parts.sm.commit()
        recovery.close_cleanly(parts.sm.env)
        self._metrics.close()
        self._endpoint.close()
        logger.info("consensus stopped")

    # -- the front end's requests -----------------------------------------------------

    def _on_frame(self, kind: Kind, request_id: int, body: bytes) -> None:
        parts = self._parts
        if parts is None:
            return
        try:
            self._handle(parts, kind, request_id, body)
        except GcsHaError as exc:  # e.g. an entry too large for the log
            self._complete(request_id, Reason.REFUSED, str(exc))
        except Exception as exc:
            logger.exception("%s request %d failed", kind.name, request_id)
            self._complete(request_id, Reason.FAILED, repr(exc))

    def _handle(self, parts: _Parts, kind: Kind, request_id: int, body: bytes) -> None:
        node = parts.node
        if kind == Kind.PROPOSE:
            node.propose(body, self._completer(request_id))
        elif kind == Kind.READ:
            self._register_read(node, request_id)
        elif kind == Kind.ADD_NODE:
            node.add_node(body.decode(), self._completer(request_id))
        elif kind == Kind.REMOVE_NODE:
            node.remove_node(body.decode(), self._completer(request_id))
        elif kind == Kind.TRANSFER:
            node.transfer_leadership(body.decode() or None, self._completer(request_id))
        elif kind == Kind.COMPACT:
            self._start_compaction(parts, request_id)
        elif kind == Kind.METRICS:
            self._endpoint.send(frame(Kind.METRICS_TEXT, request_id, self._metrics.text()))
        elif kind == Kind.STOP:
            self._stopping = True
        elif kind != Kind.PING:
            logger.warning("ignoring an unexpected %s frame", kind.name)

    def _on_front_end_gone(self) -> None:
        if not self._stopping:
            logger.warning("the front end is gone: stopping")
            self._stopping = True

    def _register_read(self, node: RaftNode, request_id: int) -> None:
        if not node.is_leader():
            self._complete(request_id, Reason.NOT_LEADER)
            return
        read_index = max(node.commit_index(), node.first_index_of_term())
        tag = self._reads.register(request_id, read_index, ps.read_tag_sent(node.sync_obj))
        if tag is not None:
            ps.set_read_tag(node.sync_obj, tag)
            node.request_heartbeat()

    def _start_compaction(self, parts: _Parts, request_id: int) -> None:
        deadline = time.monotonic() + COMPACTION_START_WAIT_S
        started = parts.snapshotter.snapshots_started
        self._compactions.append(_Compaction(request_id, started, deadline))
        parts.node.force_compaction()

    # -- pysyncobj's callbacks (this thread) ------------------------------------------

    def _completer(self, request_id: int) -> Callable[[Any, int], None]:
        def done(result: Any, reason: int) -> None:
            results = result if isinstance(result, list) else ()
            self._complete(request_id, reason, results=results)

        return done

    def _complete(
        self, request_id: int, reason: int, message: str = "", results: Any = (), value: int = 0
    ) -> None:
        self._done.append(
            ipc_pb.Completion(
                id=request_id, reason=reason, message=message, results=results, value=value
            )
        )

    def _on_state_changed(self, old: int, new: int) -> None:
        parts = self._parts
        term = parts.node.term() if parts is not None else 0
        self._endpoint.send(frame(Kind.ROLE, body=ipc.ROLE_BODY.pack(old, new, term)))
        if new == ps.RAFT_LEADER:
            logger.info("elected leader of term %d", term)
        if parts is not None:
            self._send_status(parts.node)
        if new != ps.RAFT_LEADER:
            for request_id in self._reads.fail_all():
                self._complete(request_id, Reason.NOT_LEADER)

    def _after_tick(self) -> None:
        parts = self._parts
        if parts is None:
            return
        failure = parts.journal.failure
        if failure is not None and not self._stopping:
            fatal("the Raft journal failed", OSError(failure))
        parts.sm.commit()
        node = parts.node
        if node.is_leader() and len(self._reads):
            echoes = ps.read_echoes(node.sync_obj)
            for request_id in self._reads.ready(echoes, node.voters(), parts.sm.applied_index):
                self._complete(request_id, Reason.SUCCESS)
        if self._compactions:
            self._check_compactions(parts.snapshotter)
        self._compact_by_bytes(parts)
        if self._done:
            body = ipc_pb.Completions(items=self._done).SerializeToString()
            self._done = []
            self._endpoint.send(frame(Kind.DONE, body=body))
        if time.monotonic() >= self._status_due:
            self._send_status(node)
        self._endpoint.flush()

    def _compact_by_bytes(self, parts: _Parts) -> None:
        """Compact once the journal holds `compaction_min_bytes` (pysyncobj only counts
        entries: large values would otherwise fill memory and disk first)."""
        over = parts.journal.size_bytes >= self._compaction_min_bytes
        now = time.monotonic()
        if over and now >= self._next_byte_compaction and not parts.snapshotter.busy():
            self._next_byte_compaction = now + BYTE_COMPACTION_GAP_S
            logger.info("compacting: the journal holds %d bytes", parts.journal.size_bytes)
            parts.node.force_compaction()

    def _check_compactions(self, snapshotter: Snapshotter) -> None:
        now = time.monotonic()
        waiting = []
        for job in self._compactions:
            started = snapshotter.snapshots_started > job.started_before
            if (started or now > job.start_deadline) and not snapshotter.busy():
                index = snapshotter.last_snapshot_index
                self._complete(job.request_id, Reason.SUCCESS, value=index)
            else:
                waiting.append(job)
        self._compactions = waiting

    def _send_status(self, node: RaftNode) -> None:
        self._status_due = time.monotonic() + STATUS_PERIOD_S
        status = node.status()
        if self._parts is not None:
            status = replace(status, snapshots=self._parts.snapshotter.snapshots_started)
        self._endpoint.send(frame(Kind.STATUS, body=status.to_json()))


def _config_from(doc: dict[str, Any]) -> ReplicaConfig:
    replica = doc.get("replica")
    if not isinstance(replica, dict):
        raise ConfigError("the CONFIG frame has no replica config")
    return config_from_doc(replica)


def _conf(
    config: ReplicaConfig,
    journal: DurableJournal,
    dump: Path,
    snapshotter: Snapshotter,
    on_state_changed: Callable[[int, int], None],
) -> Any:
    return ps.make_conf(
        bind_address=config.raft_address,
        password=config.secret,
        insecure=config.insecure,
        journal=journal,
        full_dump_file=str(dump),
        serializer=snapshotter.serialize,
        deserializer=snapshotter.deserialize,
        serialize_checker=snapshotter.check,
        on_state_changed=on_state_changed,
        timing=config.timing,
        log_compaction_min_entries=config.compaction_min_entries,
        auto_tick=False,
        joining=config.joining,
    )


def _timing_of(conf: Any) -> str:
    """The Raft timing pysyncobj runs with, as read back from its own settings."""
    return (
        f"election timeout {conf.raftMinTimeout:g}-{conf.raftMaxTimeout:g} s, "
        f"heartbeat {conf.appendEntriesPeriod:g} s, "
        f"leader fallback {conf.leaderFallbackTimeout:g} s"
    )


def _check_dump(dump: Path) -> None:
    """An empty dump is the trace of a first snapshot cut short by a crash (the log was
    not compacted): drop it. Any other unreadable dump is damage."""
    if not dump.exists():
        return
    if dump.stat().st_size == 0:
        logger.warning("removing empty snapshot %s (first snapshot interrupted)", dump)
        dump.unlink()
        return
    try:
        read_header(dump)
    except CorruptDataError as exc:
        raise CorruptDataError(
            f"{exc}. The Raft log before it was compacted away; to resync this replica "
            f"from the others, stop it and remove {dump.parent} (keep lmdb/)"
        ) from exc
