"""Simulated power loss for a stopped replica: its Raft journal, its LMDB, its snapshot
temp files (`drop_unsynced`, `lose_unsynced_lmdb`, `tear_snapshot_temp_files`, and
`simulate_power_loss` for all three). Run them only on a replica whose process is dead.

What is modelled and its limits: docs/durability.md. `drop_unsynced` raises ConfigError
for a journal never opened with GCS_HA_CRASH_SIM=1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gcs_ha.consensus import recovery
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


SIMULATED_BOOT_ID = "simulated-power-loss"
LMDB_META_PAGES_BYTES = 2 * 4096


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


def lose_unsynced_lmdb(lmdb_dir: Path) -> bool:
    """Leave a stopped replica's LMDB as a power loss may: unreadable if it was dirty.
    Returns whether it was dirty (and is now damaged)."""
    state = recovery.read_state(lmdb_dir)
    data = lmdb_dir / "data.mdb"
    if state is None or state.clean or not data.exists():
        return False
    with open(data, "r+b") as f:
        f.write(b"\0" * min(LMDB_META_PAGES_BYTES, data.stat().st_size))
    recovery.write_state(lmdb_dir, recovery.LmdbState(clean=False, boot_id=SIMULATED_BOOT_ID))
    return True


# Snapshot files still being written (snapshotter) or received (pysyncobj's serializer):
# nothing synced them yet, so a power loss may leave any prefix of them.
SNAPSHOT_TEMP_SUFFIXES = (".writing", ".1.tmp")


def tear_snapshot_temp_files(dump: Path) -> int:
    """Cut every snapshot file in progress next to the dump `dump` to half its length, the
    worst a power loss leaves of a file never synced; returns how many. The dump itself is
    synced before it is renamed into place (and the directory after), so it is kept whole;
    a temp name that is a hard link to the dump (the snapshotter's no-op rename) is its
    inode, not a file in progress, and is left alone."""
    torn = 0
    dump_inode = dump.stat().st_ino if dump.exists() else None
    for suffix in SNAPSHOT_TEMP_SUFFIXES:
        temp = dump.with_name(dump.name + suffix)
        if not temp.exists() or temp.stat().st_ino == dump_inode:
            continue
        os.truncate(temp, temp.stat().st_size // 2)
        torn += 1
    return torn


@dataclass(frozen=True)
class PowerLossReport:
    journal: DropReport
    lmdb_damaged: bool
    snapshot_files_torn: int = 0


def simulate_power_loss(data_dir: Path) -> PowerLossReport:
    """A power loss of the stopped replica whose data dir is `data_dir`: the journal's
    unsynced data dropped (needs GCS_HA_CRASH_SIM=1, see `drop_unsynced`), a dirty LMDB
    damaged, snapshot files in progress torn."""
    journal = drop_unsynced(data_dir / "raft" / "journal")
    torn = tear_snapshot_temp_files(data_dir / "raft" / "snapshot")
    return PowerLossReport(journal, lose_unsynced_lmdb(data_dir / "lmdb"), torn)
