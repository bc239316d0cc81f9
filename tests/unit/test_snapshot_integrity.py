"""Snapshots as durable and as checked as the journal: the image digest of format 2, what
reads it (verify_snapshot, extract_image, recovery, Snapshotter.deserialize) and what a
damaged or unrestorable snapshot leads to."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gcs_ha.consensus import recovery
from gcs_ha.consensus.snapshot import (
    FORMAT_VERSION,
    MAGIC,
    SnapshotHeader,
    extract_image,
    read_header,
    verify_snapshot,
)
from gcs_ha.consensus.snapshotter import SUCCESS, Snapshotter
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import CorruptDataError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.testing.powerloss import tear_snapshot_temp_files

Fatal = list[tuple[str, BaseException]]


def fill(env: LmdbEnv, keys: range, applied: int) -> None:
    with env.write() as txn:
        for i in keys:
            txn.put(KV_TABLE, b"k%d" % i, b"v%d" % i)
        txn.set_applied_index(applied)


def snapshotter(tmp_path: Path, name: str, fatal: Fatal) -> tuple[Snapshotter, LmdbEnv]:
    lmdb = tmp_path / name
    env = LmdbEnv(lmdb, sync=False)
    sm = LmdbStateMachine(env, lambda what, exc: fatal.append((what, exc)))
    snap = Snapshotter(
        sm,
        lmdb,
        tmp_path / f"{name}.dump",
        lambda: LmdbEnv(lmdb, sync=False),
        str,
        on_fatal=lambda what, exc: fatal.append((what, exc)),
    )
    return snap, env


def take_snapshot(snap: Snapshotter, dump: Path, applied: int) -> None:
    snap.serialize(str(dump) + ".tmp", ((b"", applied, 1), (b"", applied - 1, 1), []))
    snap.wait()
    assert snap.check() == SUCCESS


def flip_image_byte(path: Path) -> None:
    header, offset = read_header(path)
    with open(path, "r+b") as f:
        f.seek(offset + header.image_length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_snapshot_carries_the_digest_of_its_image(tmp_path: Path) -> None:
    fatal: Fatal = []
    snap, env = snapshotter(tmp_path, "a", fatal)
    fill(env, range(10), 10)
    dump = tmp_path / "a.dump"
    take_snapshot(snap, dump, 10)
    header = verify_snapshot(dump)
    assert len(header.image_sha256) == 64 and header.lmdb_applied_index == 10
    with open(dump, "rb") as f:
        assert struct.unpack("<8sI", f.read(12)) == (MAGIC, FORMAT_VERSION)
    flip_image_byte(dump)
    with pytest.raises(CorruptDataError, match="checksum mismatch"):
        verify_snapshot(dump)
    out = tmp_path / "image"
    header, offset = read_header(dump)
    with pytest.raises(CorruptDataError, match="checksum mismatch"):
        extract_image(dump, header, offset, out)
    assert not out.exists()
    env.close()
    assert fatal == []


def test_a_format_1_snapshot_is_still_read(tmp_path: Path) -> None:
    """Written before digests existed: no digest to check, restored all the same."""
    env = LmdbEnv(tmp_path / "old", sync=False)
    fill(env, range(3), 3)
    path = tmp_path / "v1"
    body = b'{"cluster": [], "last": [3, 1, ""], "lmdb_applied_index": 3, "previous": [2, 1, ""]}'
    with open(path, "w+b") as f:
        f.write(struct.pack("<8sIIQ", MAGIC, 1, len(body), 0))
        f.write(body)
        f.flush()
        start = f.tell()
        env.copy_to_fd(f.fileno())
        length = f.seek(0, 2) - start
        f.seek(0)
        f.write(struct.pack("<8sIIQ", MAGIC, 1, len(body), length))
    env.close()
    header = verify_snapshot(path)
    assert header == SnapshotHeader((b"", 3, 1), (b"", 2, 1), (), 3, length, "")
    extract_image(path, header, read_header(path)[1], tmp_path / "image")
    assert (tmp_path / "image").stat().st_size == length


def test_a_snapshot_that_cannot_be_restored_is_fatal(tmp_path: Path) -> None:
    """pysyncobj logs a failed restore and goes on (acknowledging a received snapshot it
    never installed); the snapshotter stops the replica instead, before touching LMDB."""
    fatal: Fatal = []
    source, env = snapshotter(tmp_path, "src", fatal)
    fill(env, range(20), 20)
    dump = tmp_path / "src.dump"
    take_snapshot(source, dump, 20)
    env.close()
    flip_image_byte(dump)
    target, target_env = snapshotter(tmp_path, "dst", fatal)
    fill(target_env, range(2), 2)  # behind the snapshot: it would install it
    with pytest.raises(CorruptDataError):
        target.deserialize(str(dump))
    assert [what for what, _ in fatal] == [f"cannot restore the snapshot {dump}"]
    assert target_env.applied_index() == 2  # LMDB untouched
    target_env.close()


def test_recovery_checks_the_image_before_it_removes_lmdb(tmp_path: Path) -> None:
    fatal: Fatal = []
    snap, env = snapshotter(tmp_path, "lmdb", fatal)
    fill(env, range(5), 5)
    dump = tmp_path / "lmdb.dump"
    take_snapshot(snap, dump, 5)
    env.close()
    flip_image_byte(dump)
    with pytest.raises(CorruptDataError):
        recovery.rebuild(tmp_path / "lmdb", dump)
    assert (tmp_path / "lmdb" / "data.mdb").exists()


def test_a_power_loss_tears_snapshots_in_progress_and_keeps_the_dump(tmp_path: Path) -> None:
    """What a power loss leaves: the files being written (snapshotter) or received
    (pysyncobj) cut short, the synced dump whole."""
    fatal: Fatal = []
    snap, env = snapshotter(tmp_path, "lmdb", fatal)
    fill(env, range(30), 30)
    dump = tmp_path / "lmdb.dump"
    take_snapshot(snap, dump, 30)
    env.close()
    size = dump.stat().st_size
    for suffix in (".writing", ".1.tmp"):
        Path(str(dump) + suffix).write_bytes(dump.read_bytes())
    assert tear_snapshot_temp_files(dump) == 2
    for suffix in (".writing", ".1.tmp"):
        assert Path(str(dump) + suffix).stat().st_size == size // 2
    assert verify_snapshot(dump).lmdb_applied_index == 30
    assert tear_snapshot_temp_files(tmp_path / "no-dump") == 0
