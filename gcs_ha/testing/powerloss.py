"""Simulated power loss for a stopped replica's Raft journal.

With GCS_HA_CRASH_SIM=1, `DurableJournal` records after each real fsync what the disk holds:
`<log>.synced` = (inode, length) of the log, `<log>.meta.synced` = a copy of the meta file.
`drop_unsynced` turns the files into what a power loss at that moment would leave: the log cut
to its synced length, the meta file as of its last durable store, no commit-index file and no
temp files. Run it only on a replica that is stopped (its journal closed or its process dead).

Limits (see docs/durability.md): it models the journal only. LMDB commits are real fsyncs and
are not rolled back. A page-cache write that the kernel happened to flush on its own is
dropped too (a power loss may or may not keep it; we model the worst case). If the process died
between a compaction's rename and its marker update, the marker names the old file: the new
file was fsynced before the rename, so it is kept whole (`stale_marker` in the report).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gcs_ha.consensus.journal import (
    HEADER_SIZE,
    commit_path,
    meta_path,
    meta_synced_path,
    read_marker,
    synced_marker_path,
    temp_path,
)
from gcs_ha.errors import ConfigError

MetaOutcome = Literal["restored", "removed", "absent"]
META_RESTORED: MetaOutcome = "restored"  # meta replaced by its last durable copy
META_REMOVED: MetaOutcome = "removed"  # meta was never durably stored: deleted
META_ABSENT: MetaOutcome = "absent"  # there was no meta file and no durable copy


@dataclass(frozen=True)
class DropReport:
    """What `drop_unsynced` did to one journal."""

    log_path: Path
    log_bytes_before: int
    log_bytes_after: int
    log_removed: bool
    meta: MetaOutcome
    stale_marker: bool = False

    @property
    def log_bytes_dropped(self) -> int:
        return self.log_bytes_before - self.log_bytes_after


def drop_unsynced(journal_path: Path) -> DropReport:
    """Leave the journal at `journal_path` as a power loss would: drop all unsynced data.

    Raises ConfigError if the journal was never opened with GCS_HA_CRASH_SIM=1 (there is no
    record of what was synced, and guessing would destroy real data).
    """
    log = Path(journal_path)
    marker = read_marker(synced_marker_path(log))
    if marker is None:
        raise ConfigError(f"{log}: no crash-simulation marker; was it opened with CRASH_SIM=1?")
    for leftover in (temp_path(log), temp_path(meta_path(log)), commit_path(log)):
        leftover.unlink(missing_ok=True)
    before = log.stat().st_size if log.exists() else 0
    after, removed, stale = _drop_log(log, marker)
    return DropReport(log, before, after, removed, _restore_meta(log), stale)


def _drop_log(log: Path, marker: tuple[int, int]) -> tuple[int, bool, bool]:
    """Cut the log to its synced length: (size after, removed, stale marker)."""
    inode, length = marker
    if not log.exists():
        return 0, False, False
    if length < HEADER_SIZE:
        log.unlink()  # not even its header was ever synced: the file would not exist
        return 0, True, False
    stat = log.stat()
    if stat.st_ino != inode:
        return stat.st_size, False, True
    new_size = min(length, stat.st_size)
    os.truncate(log, new_size)
    return new_size, False, False


def _restore_meta(log: Path) -> MetaOutcome:
    meta, copy = meta_path(log), meta_synced_path(log)
    if copy.exists():
        meta.write_bytes(copy.read_bytes())
        return META_RESTORED
    if meta.exists():
        meta.unlink()
        return META_REMOVED
    return META_ABSENT
