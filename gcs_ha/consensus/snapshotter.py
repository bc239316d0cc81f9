"""pysyncobj's serializer / deserializer / serializeChecker hooks, over LMDB snapshots.

`serialize` (log compaction) hands an LMDB read transaction to a background copy;
`check` syncs LMDB before it reports SUCCESS; `deserialize` (at start, or a snapshot a
leader streamed) installs the image unless LMDB already holds everything it covers.
How they fit pysyncobj's calls: DESIGN.md, "Snapshots". A snapshot that cannot be
restored stops the replica (`on_fatal`, exit 70); an installed one calls `on_installed`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gcs_ha.consensus.snapshot import (
    RaftEntry,
    SnapshotHeader,
    extract_image,
    fsync_dir,
    image_sha256,
    read_header,
    write_header,
)
from gcs_ha.consensus.state_machine import FatalHandler, LmdbStateMachine, Observe, ignore_duration
from gcs_ha.storage.lmdb_env import LmdbEnv, ReadTxn

logger = logging.getLogger(__name__)

# pysyncobj's SERIALIZER_STATE values (kept here so this module needs no pysyncobj).
NOT_SERIALIZING, SERIALIZING, SUCCESS, FAILED = 0, 1, 2, 3

OpenEnv = Callable[[], LmdbEnv]
MakeNode = Callable[[str], Any]
OnInstalled = Callable[[], None]


class Snapshotter:
    """Writes and restores snapshots for one replica.

    `lmdb_dir` is the replica's LMDB directory, `open_env` reopens it after an image was
    installed (then `on_installed` runs), `make_node` turns a Raft address into
    pysyncobj's node object.
    """

    def __init__(
        self,
        sm: LmdbStateMachine,
        lmdb_dir: Path,
        dump_path: Path,
        open_env: OpenEnv,
        make_node: MakeNode,
        *,
        on_installed: OnInstalled = lambda: None,
        on_fatal: FatalHandler | None = None,
        observe_save: Observe = ignore_duration,
        observe_install: Observe = ignore_duration,
    ) -> None:
        """`observe_save` / `observe_install`: told how long each snapshot written /
        installed took, in seconds (metrics)."""
        self._observe_save = observe_save
        self._observe_install = observe_install
        self._sm = sm
        self._lmdb_dir = lmdb_dir
        self._dump = dump_path
        self._open_env = open_env
        self._make_node = make_node
        self._on_installed = on_installed
        self._on_fatal = on_fatal
        self._lock = threading.Lock()
        self._state = NOT_SERIALIZING
        self._thread: threading.Thread | None = None
        self.last_snapshot_index = 0
        self.snapshots_started = 0

    # -- pysyncobj hooks (tick thread) -------------------------------------------------

    def serialize(self, tmp_path: str, data: tuple[RaftEntry, RaftEntry, Iterable[Any]]) -> None:
        """Start a snapshot covering `data` = (last applied entry, previous, cluster)."""
        last, previous, cluster = data
        self._sm.commit()
        self._sm.sync()
        self._keep_current_dump(Path(tmp_path))
        env = self._sm.env
        txn = env.read_txn_for_copy()
        header_fields = (
            _plain(last),
            _plain(previous),
            tuple(sorted(str(n.id) for n in cluster)),
            txn.applied_index(),
        )
        with self._lock:
            self._state = SERIALIZING
        self.snapshots_started += 1
        self._thread = threading.Thread(
            target=self._write, args=(env, txn, header_fields), name="gcs-ha-snapshot", daemon=True
        )
        self._thread.start()

    def check(self) -> int:
        """pysyncobj's serializeChecker: SERIALIZING until done, then SUCCESS/FAILED once."""
        with self._lock:
            state = self._state
            if state in (SUCCESS, FAILED):
                self._state = NOT_SERIALIZING
        if state == SUCCESS:
            self._sm.sync()  # pysyncobj compacts the journal next
        return state

    def wait(self) -> None:
        """Wait for a snapshot being written (before the environment is closed)."""
        thread = self._thread
        if thread is not None:
            thread.join()

    def busy(self) -> bool:
        """Whether a snapshot is being written or waits to be reported to pysyncobj."""
        with self._lock:
            return self._state != NOT_SERIALIZING

    def deserialize(self, dump_path: str) -> tuple[RaftEntry, RaftEntry, list[Any]]:
        """Restore from a snapshot file; returns what pysyncobj needs back. A snapshot that
        cannot be restored is fatal (`on_fatal`): pysyncobj would log the error and go on
        (and acknowledge a received snapshot it never installed)."""
        path = Path(dump_path)
        try:
            return self._restore(path)
        except Exception as exc:
            if self._on_fatal is not None:
                self._on_fatal(f"cannot restore the snapshot {path}", exc)
            raise

    # -- internals -------------------------------------------------------------------

    def _restore(self, path: Path) -> tuple[RaftEntry, RaftEntry, list[Any]]:
        header, offset = read_header(path)
        if self._sm.env.applied_index() < header.lmdb_applied_index:
            self._install(path, header, offset)
        else:
            logger.info(
                "snapshot at %d: local LMDB already at %d, kept",
                header.last[1],
                self._sm.env.applied_index(),
            )
        self.last_snapshot_index = header.last[1]
        nodes = [self._make_node(address) for address in header.cluster]
        return header.last, header.previous, nodes

    def _keep_current_dump(self, tmp: Path) -> None:
        """Make pysyncobj's coming rename of `tmp` over the dump a no-op."""
        tmp.unlink(missing_ok=True)
        if self._dump.exists():
            os.link(self._dump, tmp)
        else:
            tmp.touch()

    def _write(self, env: LmdbEnv, txn: ReadTxn, fields: tuple[Any, ...]) -> None:
        last, previous, cluster, applied = fields
        private = self._dump.with_name(self._dump.name + ".writing")
        started = time.perf_counter()
        try:
            with open(private, "w+b") as f:
                write_header(f, SnapshotHeader(last, previous, cluster, applied, 0))
                f.flush()
                image_start = f.tell()
                env.copy_txn_to_fd(txn, f.fileno())
                length = os.lseek(f.fileno(), 0, os.SEEK_END) - image_start
                digest = image_sha256(f, image_start, length)
                header = SnapshotHeader(last, previous, cluster, applied, length, digest)
                write_header(f, header)
                f.flush()
                os.fsync(f.fileno())
            os.replace(private, self._dump)
            fsync_dir(self._dump.parent)
            self.last_snapshot_index = last[1]
            state = SUCCESS
            self._observe_save(time.perf_counter() - started)
            logger.info("snapshot at index %d written (%d bytes of LMDB)", last[1], length)
        except Exception:
            logger.exception("snapshot at index %d failed", last[1])
            state = FAILED
        finally:
            txn.abort()
        with self._lock:
            self._state = state

    def _install(self, path: Path, header: SnapshotHeader, offset: int) -> None:
        started = time.perf_counter()
        image = self._lmdb_dir.with_name(self._lmdb_dir.name + ".image")
        extract_image(path, header, offset, image)
        self._sm.commit()
        self._sm.env.close()
        LmdbEnv.install_image(self._lmdb_dir, image)
        self._sm.replace_env(self._open_env())
        image.unlink(missing_ok=True)
        self._on_installed()
        self._observe_install(time.perf_counter() - started)
        logger.info(
            "installed snapshot at index %d (LMDB applied %d)",
            header.last[1],
            header.lmdb_applied_index,
        )


def _plain(entry: Any) -> RaftEntry:
    command, index, term = entry
    return bytes(command), int(index), int(term)
