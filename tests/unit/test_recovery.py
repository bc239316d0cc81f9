"""gcs_ha.consensus.recovery: LMDB marked dirty while unsynced commits may exist, rebuilt from
the snapshot after a power loss; gcs_ha.testing.powerloss.lose_unsynced_lmdb models the loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcs_ha.consensus import recovery
from gcs_ha.consensus.recovery import LmdbState
from gcs_ha.consensus.snapshot import SnapshotHeader, write_header
from gcs_ha.errors import CorruptDataError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.testing.powerloss import SIMULATED_BOOT_ID, lose_unsynced_lmdb


def fill(env: LmdbEnv, keys: range, applied: int) -> None:
    with env.write() as txn:
        for i in keys:
            txn.put(KV_TABLE, b"k%d" % i, b"v%d" % i)
        txn.set_applied_index(applied)


def keys_of(env: LmdbEnv) -> set[bytes]:
    with env.read() as txn:
        return {k for k, _ in txn.scan(KV_TABLE)}


def write_snapshot(env: LmdbEnv, path: Path) -> None:
    """A snapshot file of `env` as the snapshotter writes it (header + LMDB image)."""
    applied = env.applied_index()
    with open(path, "w+b") as f:
        write_header(f, SnapshotHeader((b"", applied, 1), (b"", applied - 1, 1), (), applied, 0))
        f.flush()
        start = f.tell()
        env.copy_to_fd(f.fileno())
        f.seek(0, 2)
        length = f.tell() - start
        write_header(
            f, SnapshotHeader((b"", applied, 1), (b"", applied - 1, 1), (), applied, length)
        )


def test_open_marks_dirty_and_a_clean_close_marks_clean(tmp_path: Path) -> None:
    lmdb = tmp_path / "lmdb"
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    assert recovery.read_state(lmdb) == LmdbState(clean=False, boot_id=recovery.current_boot_id())
    fill(env, range(3), 3)
    recovery.close_cleanly(env)
    assert recovery.read_state(lmdb) == LmdbState(clean=True, boot_id=recovery.current_boot_id())


def test_a_crash_without_reboot_keeps_lmdb(tmp_path: Path) -> None:
    """kill -9: same boot, the page cache kept every commit; nothing is rebuilt."""
    lmdb = tmp_path / "lmdb"
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    fill(env, range(5), 5)
    env.close()  # no clean close: the state stays dirty
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    assert keys_of(env) == {b"k%d" % i for i in range(5)}
    assert env.applied_index() == 5
    env.close()


def test_a_power_loss_rebuilds_lmdb_from_the_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lmdb, snapshot = tmp_path / "lmdb", tmp_path / "snapshot"
    env = recovery.open_for_writing(lmdb, snapshot)
    fill(env, range(4), 10)
    write_snapshot(env, snapshot)
    fill(env, range(4, 8), 14)  # after the snapshot: only in the journal, which replays it
    env.close()
    assert lose_unsynced_lmdb(lmdb)
    assert recovery.read_state(lmdb) == LmdbState(clean=False, boot_id=SIMULATED_BOOT_ID)
    with pytest.raises(CorruptDataError):  # what was left is unreadable
        LmdbEnv(lmdb).close()
    env = recovery.open_for_writing(lmdb, snapshot)
    assert keys_of(env) == {b"k%d" % i for i in range(4)}
    assert env.applied_index() == 10
    assert "not stopped cleanly before a reboot" in caplog.text
    env.close()


def test_a_power_loss_without_a_snapshot_starts_lmdb_empty(tmp_path: Path) -> None:
    lmdb = tmp_path / "lmdb"
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    fill(env, range(4), 4)
    env.close()
    assert lose_unsynced_lmdb(lmdb)
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    assert keys_of(env) == set()
    assert env.applied_index() == 0  # the journal replays everything from index 1
    env.close()


def test_a_clean_lmdb_survives_a_power_loss(tmp_path: Path) -> None:
    lmdb = tmp_path / "lmdb"
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    fill(env, range(2), 2)
    recovery.close_cleanly(env)
    assert not lose_unsynced_lmdb(lmdb)
    env = recovery.open_for_writing(lmdb, tmp_path / "snapshot")
    assert env.applied_index() == 2
    env.close()


def test_needs_rebuild_only_when_dirty_under_another_boot() -> None:
    assert not recovery.needs_rebuild(None, "b")  # a new or older data dir
    assert not recovery.needs_rebuild(LmdbState(clean=True, boot_id="a"), "b")
    assert not recovery.needs_rebuild(LmdbState(clean=False, boot_id="b"), "b")
    assert recovery.needs_rebuild(LmdbState(clean=False, boot_id="a"), "b")


def test_an_unreadable_state_file_counts_as_none(tmp_path: Path) -> None:
    (tmp_path / recovery.STATE_FILE).write_text("{not json")
    assert recovery.read_state(tmp_path) is None
    (tmp_path / recovery.STATE_FILE).write_text('{"format": 9}')
    assert recovery.read_state(tmp_path) is None
