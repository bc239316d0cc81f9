"""Snapshots for Raft log compaction: an LMDB hot copy tagged with its Raft position.

File format (one file, because pysyncobj streams the dump file to lagging followers):

    b"GCSHASNP" | u32 format version | u32 header length | u64 image length
    | header (JSON) | LMDB image

The header holds the last two Raft entries the snapshot covers (index, term, command
as base64) and the cluster membership (Raft addresses), which pysyncobj needs back on
restore, plus the applied index inside the LMDB image. The image length sits in the
fixed-size prefix so it can be filled in after the image was streamed. No pickle:
a snapshot received from a peer is parsed, never executed.

Writing is asynchronous: the LMDB read transaction is opened in the Raft thread at the
snapshot point, and the copy runs in a background thread (LMDB MVCC keeps that view
while the Raft thread goes on applying). The file is written to a private temp file,
fsynced, and renamed over the dump atomically.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gcs_ha.errors import CorruptDataError

MAGIC = b"GCSHASNP"
FORMAT_VERSION = 1
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

    def to_bytes(self) -> bytes:
        doc = {
            "last": _entry_doc(self.last),
            "previous": _entry_doc(self.previous),
            "cluster": list(self.cluster),
            "lmdb_applied_index": self.lmdb_applied_index,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, image_length: int) -> SnapshotHeader:
        doc = json.loads(data)
        return cls(
            last=_entry_from_doc(doc["last"]),
            previous=_entry_from_doc(doc["previous"]),
            cluster=tuple(str(a) for a in doc["cluster"]),
            lmdb_applied_index=int(doc["lmdb_applied_index"]),
            image_length=image_length,
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
            if magic != MAGIC or version != FORMAT_VERSION:
                raise CorruptDataError(f"snapshot {path}: not a gcs-ha snapshot v{FORMAT_VERSION}")
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


def extract_image(path: Path, offset: int, length: int, out: Path) -> None:
    """Copy the LMDB image of a snapshot into its own file (fsynced)."""
    with open(path, "rb") as src, open(out, "wb") as dst:
        src.seek(offset)
        remaining = length
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                raise CorruptDataError(f"snapshot {path}: image shorter than its header says")
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
