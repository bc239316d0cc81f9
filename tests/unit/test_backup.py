"""gcs_ha.backup: the backup file (atomic, checksummed) and a new cluster's data dir seeded
from one (new identity, Raft index back to 0, the old membership gone, the tables kept)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from gcs_ha.admin_auth import admin_key, key_fingerprint
from gcs_ha.backup import BackupHeader, read_backup, restore_data_dir, write_backup
from gcs_ha.datadir import Identity, read_identity
from gcs_ha.errors import ConfigError, CorruptDataError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE, MEMBERS_TABLE

OLD_SECRET, NEW_SECRET = b"o" * 32, b"n" * 32


def a_backup(tmp_path: Path) -> Path:
    """A backup of a store with 20 KV keys, a member, at Raft index 77."""
    env = LmdbEnv(tmp_path / "source", sync=False)
    with env.write() as txn:
        for i in range(20):
            txn.put(KV_TABLE, b"k%d" % i, b"v%d" % i)
        txn.put(MEMBERS_TABLE, b"r0", b"old member")
        txn.set_applied_index(77)
    image = io.BytesIO()
    with open(tmp_path / "image", "w+b") as f:
        env.copy_to_fd(f.fileno())
        f.seek(0)
        image.write(f.read())
    env.close()
    data = image.getvalue()
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    fingerprint = key_fingerprint(admin_key(OLD_SECRET))
    digest = hashlib.sha256(data).hexdigest()  # the leader sends them in the header
    header = BackupHeader("prod", 77, 0.0, "r0", fingerprint, len(data), digest)
    path = tmp_path / "backup"
    written = write_backup(path, header, chunks)
    assert written.image_length == len(data) and len(written.image_sha256) == 64
    assert not (tmp_path / "backup.partial").exists()
    return path


def test_a_backup_reads_back_and_damage_is_detected(tmp_path: Path) -> None:
    path = a_backup(tmp_path)
    header, offset = read_backup(path)
    assert (header.cluster_name, header.applied_index, header.source_node) == ("prod", 77, "r0")
    data = bytearray(path.read_bytes())
    data[offset + header.image_length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="checksum mismatch"):
        read_backup(path)
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(CorruptDataError, match="truncated"):
        read_backup(path)
    path.write_bytes(b"not a backup at all")
    with pytest.raises(CorruptDataError, match="not a gcs-ha backup"):
        read_backup(path)


def test_a_transfer_that_does_not_match_its_digest_leaves_no_file(tmp_path: Path) -> None:
    header = BackupHeader("prod", 1, 0.0, "r0", "", image_length=3, image_sha256="0" * 64)
    with pytest.raises(CorruptDataError, match="does not match"):
        write_backup(tmp_path / "b", header, [b"abc"])
    assert list(tmp_path.iterdir()) == []


def test_a_restored_replica_is_a_new_cluster_with_the_old_tables(tmp_path: Path) -> None:
    path = a_backup(tmp_path)
    target = tmp_path / "new" / "r0"
    restore_data_dir(path, target, Identity("r0", "prod-restored"), NEW_SECRET, 1 << 30)
    assert read_identity(target) == Identity("r0", "prod-restored")
    env = LmdbEnv(target / "lmdb", sync=False)
    with env.read() as txn:
        assert txn.applied_index() == 0  # the new cluster's log starts at 1
        assert len(list(txn.scan(KV_TABLE))) == 20
        assert list(txn.scan(MEMBERS_TABLE)) == []
    env.close()


@pytest.mark.parametrize(
    ("cluster", "secret", "message"),
    [
        ("prod", NEW_SECRET, "needs a new --cluster-name"),
        ("other", OLD_SECRET, "use a new secret"),
    ],
)
def test_a_restore_that_could_pass_for_the_old_cluster_is_refused(
    tmp_path: Path, cluster: str, secret: bytes, message: str
) -> None:
    path = a_backup(tmp_path)
    target = tmp_path / "r0"
    with pytest.raises(ConfigError, match=message):
        restore_data_dir(path, target, Identity("r0", cluster), secret, 1 << 30)
    assert not target.exists()


def test_a_restore_never_writes_into_a_used_data_dir(tmp_path: Path) -> None:
    path = a_backup(tmp_path)
    target = tmp_path / "r0"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        restore_data_dir(path, target, Identity("r0", "other"), NEW_SECRET, 1 << 30)
