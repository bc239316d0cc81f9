"""Backups of a running cluster (`gcs-ha snapshot save`) and new clusters seeded from one
(`gcs-ha snapshot restore`: `restore_data_dir` makes the data dir of one replica of a
*new* cluster). What a backup holds, its file format and why a restore needs a new name
and secret: docs/operations.md ("Backup and restore").

Errors raised: CorruptDataError (not a backup, truncated, checksum mismatch), ConfigError
(the same cluster name or secret as the backup's, a data dir that is not empty).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from gcs_ha.admin_auth import admin_key, key_fingerprint
from gcs_ha.consensus import recovery
from gcs_ha.consensus.snapshot import copy_range, fsync_dir, image_sha256
from gcs_ha.datadir import DataDir, Identity
from gcs_ha.errors import ConfigError, CorruptDataError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import MEMBERS_TABLE

MAGIC = b"GCSHABAK"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIIQ")


@dataclass(frozen=True)
class BackupHeader:
    """What a backup holds."""

    cluster_name: str
    applied_index: int
    created_unix: float
    source_node: str
    secret_fingerprint: str
    image_length: int = 0
    image_sha256: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackupHeader:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise CorruptDataError(f"unreadable backup header: {exc}") from exc


def write_backup(path: Path, header: BackupHeader, image: Iterable[bytes]) -> BackupHeader:
    """Write `header` (its image's length and digest known) and then `image` (chunks) to
    `path` atomically: to `<path>.partial`, checked against the header, fsynced, renamed.
    CorruptDataError, and nothing left behind, if the image does not match."""
    partial = path.with_name(path.name + ".partial")
    body = header.to_json()
    digest, length = hashlib.sha256(), 0
    with open(partial, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(body), header.image_length))
        f.write(body)
        for chunk in image:
            digest.update(chunk)
            length += len(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    if (length, digest.hexdigest()) != (header.image_length, header.image_sha256):
        partial.unlink()
        raise CorruptDataError(f"backup {path}: the image received does not match its header")
    os.replace(partial, path)
    fsync_dir(path.parent)
    return header


def read_backup(path: Path) -> tuple[BackupHeader, int]:
    """The header of a backup and the offset of its image, the image checked against its
    digest (CorruptDataError otherwise)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) != _PREFIX.size:
                raise CorruptDataError(f"{path}: not a gcs-ha backup (too short)")
            magic, version, length, image_length = _PREFIX.unpack(prefix)
            if magic != MAGIC or version != FORMAT_VERSION:
                raise CorruptDataError(f"{path}: not a gcs-ha backup (format {FORMAT_VERSION})")
            header = BackupHeader.from_json(f.read(length))
            offset = _PREFIX.size + length
            if path.stat().st_size != offset + image_length or image_length != header.image_length:
                raise CorruptDataError(f"{path}: truncated backup")
            if image_sha256(f, offset, image_length) != header.image_sha256:
                raise CorruptDataError(f"{path}: backup checksum mismatch")
    except OSError as exc:
        raise CorruptDataError(f"cannot read backup {path}: {exc}") from exc
    return header, offset


def restore_data_dir(
    backup: Path,
    data_dir: Path,
    identity: Identity,
    secret: bytes | None,
    map_size: int,
) -> BackupHeader:
    """Seed `data_dir` (absent or empty) as a replica of a new cluster from `backup`."""
    header, offset = read_backup(backup)
    if identity.cluster_name == header.cluster_name:
        raise ConfigError(
            f"the backup is of cluster {header.cluster_name!r}: a restored cluster needs a "
            "new --cluster-name, so that it can never be taken for the old one"
        )
    new_fingerprint = key_fingerprint(None if secret is None else admin_key(secret))
    if header.secret_fingerprint and new_fingerprint == header.secret_fingerprint:
        raise ConfigError(
            "the new cluster's secret is the backed-up cluster's: use a new secret, or its "
            "replicas could join the old cluster's Raft and be overwritten by it"
        )
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(f"data dir {data_dir} is not empty: restore into a new one")
    with DataDir.open(data_dir, identity.node_id, identity.cluster_name):
        lmdb_dir = data_dir / "lmdb"
        image = data_dir / "lmdb.image"
        if copy_range(backup, offset, header.image_length, image) != header.image_sha256:
            raise CorruptDataError(f"{backup}: changed while it was being restored")
        lmdb_dir.mkdir()
        LmdbEnv.install_image(lmdb_dir, image)
        image.unlink()
        env = recovery.open_for_writing(lmdb_dir, data_dir / "raft" / "snapshot", map_size)
        with env.write() as txn:
            for key, _ in list(txn.scan(MEMBERS_TABLE)):
                txn.delete(MEMBERS_TABLE, key)
            txn.set_applied_index(0)
        recovery.close_cleanly(env)
    return header
