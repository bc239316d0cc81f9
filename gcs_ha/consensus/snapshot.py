"""Snapshots for Raft log compaction: an LMDB hot copy tagged with its Raft position.

One file (pysyncobj streams the dump file to lagging followers): a fixed prefix, a JSON
header (Raft position, membership, applied index, image digest) and the LMDB image; the
format is in DESIGN.md, "Snapshots". The copy is written from a background thread to a
private temp file, fsynced and renamed over the dump. `extract_image` and
`verify_snapshot` check the image's digest before it is used. No pickle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gcs_ha.errors import CorruptDataError

MAGIC = b"GCSHASNP"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
NO_DIGEST = "0" * 64  # the digest's place while the image is being written
_PREFIX = struct.Struct("<8sIIQ")

RaftEntry = tuple[bytes, int, int]  # (command, index, term), as pysyncobj keeps them


@dataclass(frozen=True)
class SnapshotHeader:
    """What a snapshot covers."""

    last: RaftEntry
    previous: RaftEntry
    cluster: tuple[str, ...]
    lmdb_applied_index: int
    image_length: int
    image_sha256: str = ""  # hex; "" in a format 1 file (nothing to check)

    def to_bytes(self) -> bytes:
        doc = {
            "last": _entry_doc(self.last),
            "previous": _entry_doc(self.previous),
            "cluster": list(self.cluster),
            "lmdb_applied_index": self.lmdb_applied_index,
            "image_sha256": self.image_sha256 or NO_DIGEST,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, image_length: int) -> SnapshotHeader:
        doc = json.loads(data)
        digest = str(doc.get("image_sha256", ""))
        return cls(
            last=_entry_from_doc(doc["last"]),
            previous=_entry_from_doc(doc["previous"]),
            cluster=tuple(str(a) for a in doc["cluster"]),
            lmdb_applied_index=int(doc["lmdb_applied_index"]),
            image_length=image_length,
            image_sha256="" if digest == NO_DIGEST else digest,
        )


def _entry_doc(entry: RaftEntry) -> list[Any]:
    command, index, term = entry
    return [int(index), int(term), base64.b64encode(bytes(command)).decode()]


def _entry_from_doc(doc: list[Any]) -> RaftEntry:
    index, term, command = doc
    return base64.b64decode(command), int(index), int(term)


def write_header(f: BinaryIO, header: SnapshotHeader) -> None:
    """Write the prefix and header at the file's start; the LMDB image follows.
    Written once before the image (length 0) and again after it: same size both times."""
    body = header.to_bytes()
    f.seek(0)
    f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(body), header.image_length))
    f.write(body)


def read_header(path: Path) -> tuple[SnapshotHeader, int]:
    """The header of a snapshot file and the file offset of its LMDB image.
    Raises CorruptDataError for a file that is not a complete snapshot."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) != _PREFIX.size:
                raise CorruptDataError(f"snapshot {path}: truncated prefix")
            magic, version, length, image_length = _PREFIX.unpack(prefix)
            if magic != MAGIC or version not in READABLE_VERSIONS:
                raise CorruptDataError(f"snapshot {path}: not a gcs-ha snapshot (format 1 or 2)")
            header = SnapshotHeader.from_bytes(f.read(length), image_length)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptDataError(f"snapshot {path}: unreadable header: {exc}") from exc
    offset = _PREFIX.size + length
    size = path.stat().st_size
    if size != offset + header.image_length:
        raise CorruptDataError(
            f"snapshot {path}: {size} bytes, expected {offset + header.image_length}"
        )
    return header, offset


def image_sha256(f: BinaryIO, offset: int, length: int) -> str:
    """The SHA-256 (hex) of `length` bytes of `f` from `offset`."""
    digest = hashlib.sha256()
    f.seek(offset)
    remaining = length
    while remaining:
        chunk = f.read(min(remaining, 1 << 20))
        if not chunk:
            raise CorruptDataError(f"snapshot {f.name}: image shorter than its header says")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def _check_digest(path: Path, header: SnapshotHeader, found: str) -> None:
    if header.image_sha256 and found != header.image_sha256:
        raise CorruptDataError(
            f"snapshot {path}: image checksum mismatch (SHA-256 {found}, header says "
            f"{header.image_sha256})"
        )


def verify_snapshot(path: Path) -> SnapshotHeader:
    """Read a snapshot's header and check its image against the digest it carries.
    Raises CorruptDataError for a file that is not a complete, intact snapshot."""
    header, offset = read_header(path)
    with open(path, "rb") as f:
        _check_digest(path, header, image_sha256(f, offset, header.image_length))
    return header


def copy_range(path: Path, offset: int, length: int, out: Path) -> str:
    """Copy `length` bytes of `path` from `offset` into `out` (fsynced); their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as src, open(out, "wb") as dst:
        src.seek(offset)
        remaining = length
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                raise CorruptDataError(f"{path}: image shorter than its header says")
            digest.update(chunk)
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def extract_image(path: Path, header: SnapshotHeader, offset: int, out: Path) -> None:
    """Copy the LMDB image of a snapshot into its own file (fsynced), checking its digest
    (CorruptDataError, and `out` removed, when it does not match)."""
    found = copy_range(path, offset, header.image_length, out)
    try:
        _check_digest(path, header, found)
    except CorruptDataError:
        out.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
