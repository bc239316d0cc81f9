"""Whether LMDB survived the last stop, and rebuilding it when it may not have.

LMDB is committed without sync, so `STATE_FILE` records "dirty" (with the boot id) before
the first unsynced commit and "clean" after a clean stop; "dirty" under another boot id
at start means LMDB may have lost commits to a power loss, and it is rebuilt from the
last snapshot's image, the journal replaying the rest. See DESIGN.md, "Recovery after a
power loss".

Errors: DataDirError when the state file cannot be written; CorruptDataError from a
damaged snapshot during a rebuild (then nothing can be rebuilt here: resync the replica).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from gcs_ha.consensus.snapshot import extract_image, fsync_dir, read_header
from gcs_ha.errors import DataDirError
from gcs_ha.storage.lmdb_env import LmdbEnv

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
"""In the LMDB directory: {"format": 1, "clean": bool, "boot_id": str}."""
STATE_FORMAT = 1
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
LMDB_FILES = ("data.mdb", "lock.mdb")
PREVIOUS_PROCESS_WAIT_S = 5.0
"""How long a starting consensus process waits for this replica's previous one to let go
of LMDB (the kernel kills it when its front end dies, but not always before a restart)."""


@dataclass(frozen=True)
class LmdbState:
    clean: bool
    boot_id: str


def current_boot_id() -> str:
    """This boot's id (changes at every reboot); "" where the kernel does not tell."""
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return ""


def read_state(lmdb_dir: Path) -> LmdbState | None:
    """The recorded state, or None when there is none (a new or older data dir) or it
    cannot be read (then the caller treats LMDB as it did before this file existed)."""
    path = lmdb_dir / STATE_FILE
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        return LmdbState(clean=bool(doc["clean"]), boot_id=str(doc["boot_id"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        logger.warning("%s unreadable (%s); treating LMDB as clean", path, exc)
        return None


def write_state(lmdb_dir: Path, state: LmdbState) -> None:
    """Record `state` durably (temp file, fsync, rename, fsync of the directory)."""
    path = lmdb_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    doc = {"format": STATE_FORMAT, "clean": state.clean, "boot_id": state.boot_id}
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(lmdb_dir)
    except OSError as exc:
        raise DataDirError(f"cannot record the LMDB state in {path}: {exc}") from exc


def needs_rebuild(state: LmdbState | None, boot_id: str) -> bool:
    """True when LMDB was left dirty by an earlier boot (its unsynced commits may be lost)."""
    return state is not None and not state.clean and state.boot_id != boot_id


def rebuild(lmdb_dir: Path, snapshot: Path) -> int:
    """Replace LMDB by the snapshot's image (empty without a snapshot); returns the
    applied index it now holds. The journal replays the rest at start."""
    if not snapshot.exists():
        _remove_lmdb(lmdb_dir)
        fsync_dir(lmdb_dir)
        logger.warning("LMDB rebuilt empty (no snapshot): the journal replays everything")
        return 0
    header, offset = read_header(snapshot)
    image = lmdb_dir.with_name(lmdb_dir.name + ".image")
    try:
        extract_image(snapshot, header, offset, image)  # checked before LMDB goes
        _remove_lmdb(lmdb_dir)
        LmdbEnv.install_image(lmdb_dir, image)
    finally:
        image.unlink(missing_ok=True)
    logger.warning(
        "LMDB rebuilt from the snapshot at index %d (applied %d): the journal replays the rest",
        header.last[1],
        header.lmdb_applied_index,
    )
    return header.lmdb_applied_index


def _remove_lmdb(lmdb_dir: Path) -> None:
    for name in LMDB_FILES:
        (lmdb_dir / name).unlink(missing_ok=True)
    lmdb_dir.mkdir(parents=True, exist_ok=True)


def open_for_writing(lmdb_dir: Path, snapshot: Path, map_size: int = 8 << 30) -> LmdbEnv:
    """Open the replica's LMDB for its state machine: rebuilt first when the last stop
    left it dirty under another boot, then marked dirty (commits are not synced) under
    this boot's id."""
    boot_id = current_boot_id()
    state = read_state(lmdb_dir)
    if needs_rebuild(state, boot_id):
        logger.warning(
            "LMDB in %s was not stopped cleanly before a reboot or power loss: rebuilding",
            lmdb_dir,
        )
        rebuild(lmdb_dir, snapshot)
    env = LmdbEnv(
        lmdb_dir,
        sync=False,
        metasync=False,
        map_size=map_size,
        lock_wait_s=PREVIOUS_PROCESS_WAIT_S,
    )
    try:
        write_state(lmdb_dir, LmdbState(clean=False, boot_id=boot_id))
    except BaseException:
        env.close()
        raise
    return env


def close_cleanly(env: LmdbEnv) -> None:
    """Sync LMDB, record it clean, close it."""
    env.sync()
    write_state(env.path, LmdbState(clean=True, boot_id=current_boot_id()))
    env.close()
