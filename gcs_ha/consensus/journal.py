"""A durable Raft journal with the interface pysyncobj's SyncObj calls.

`DurableJournal` replaces pysyncobj's FileJournal, which never fsyncs: `add()` writes to
the page cache, `flush()` fdatasyncs (called before any acknowledgement or vote leaves
the node), term and vote are stored durably before `setCurrentTerm()` returns. Files and
formats: docs/durability.md. Not thread-safe: only pysyncobj's tick thread calls it.

Errors: CorruptDataError when opening a damaged log or meta file; StorageError for any I/O
error, after which every further write is refused (after a failed fsync the page cache can
no longer be trusted: restart and reopen); TypeError/ValueError for caller bugs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import time
import zlib
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NoReturn, overload

from gcs_ha.errors import CorruptDataError, StorageError

logger = logging.getLogger(__name__)

CRASH_SIM_ENV = "GCS_HA_CRASH_SIM"
UNSAFE_SKIP_FSYNC_ENV = "GCS_HA_UNSAFE_SKIP_FSYNC"
UNSAFE_FAIL_FSYNC_FILE_ENV = "GCS_HA_UNSAFE_FAIL_FSYNC_FILE"

Entry = tuple[bytes, int, int]  # (command, Raft index, Raft term), as pysyncobj stores them

FILE_MAGIC = b"GCSHARJL"
FORMAT_VERSION = 1
_FILE_HEADER = struct.Struct("<8sII")  # magic, format version, reserved (0)
HEADER_SIZE = _FILE_HEADER.size
RECORD_MAGIC = b"\xd7RJ\x1e"
_REC_HEAD = struct.Struct("<4sIQQ")  # record magic, payload length, idx, term
_REC_CRC = struct.Struct("<I")  # CRC32 of head + payload
RECORD_OVERHEAD = _REC_HEAD.size + _REC_CRC.size
_MARKER = struct.Struct("<QQ")  # inode, durable length of the log
_COMMIT = struct.Struct("<4sQI")  # magic, commit index, CRC32 of the first 12 bytes
_COMMIT_MAGIC = b"GCCI"
META_FORMAT = 1
_COPY_CHUNK = 1 << 20


def meta_path(log: Path) -> Path:
    """Where term and vote of the log at `log` live."""
    return log.with_name(log.name + ".meta")


def commit_path(log: Path) -> Path:
    """Where the (lazily written) commit index of the log at `log` lives."""
    return log.with_name(log.name + ".commit")


def synced_marker_path(log: Path) -> Path:
    """Crash simulation: (inode, length) of the log as of its last real fsync."""
    return log.with_name(log.name + ".synced")


def meta_synced_path(log: Path) -> Path:
    """Crash simulation: copy of the meta file as of its last durable store."""
    return log.with_name(log.name + ".meta.synced")


def temp_path(path: Path) -> Path:
    """The temporary file an atomic replace of `path` writes first."""
    return path.with_name(path.name + ".tmp")


def read_marker(path: Path) -> tuple[int, int] | None:
    """The (inode, length) in a `.synced` marker, or None if it is missing or short."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _MARKER.size:
        return None
    inode, length = _MARKER.unpack_from(data)
    return int(inode), int(length)


def encode_record(command: bytes, idx: int, term: int) -> bytes:
    """One log record: magic, length, idx, term, payload, CRC32 of all of it."""
    try:
        head = _REC_HEAD.pack(RECORD_MAGIC, len(command), idx, term)
    except struct.error as exc:
        raise ValueError(f"entry idx={idx} term={term} len={len(command)} out of range") from exc
    return head + command + _REC_CRC.pack(zlib.crc32(command, zlib.crc32(head)))


def _parse_record(buf: bytes, off: int) -> tuple[Entry, int] | None:
    """The valid record at `off` and the offset after it, or None if there is none."""
    end = off + _REC_HEAD.size
    if end + _REC_CRC.size > len(buf):
        return None
    magic, length, idx, term = _REC_HEAD.unpack_from(buf, off)
    if magic != RECORD_MAGIC or end + length + _REC_CRC.size > len(buf):
        return None
    (crc,) = _REC_CRC.unpack_from(buf, end + length)
    if zlib.crc32(memoryview(buf)[off : end + length]) != crc:
        return None
    return (buf[end : end + length], idx, term), end + length + _REC_CRC.size


def _valid_record_after(buf: bytes, damaged_at: int, last_idx: int) -> tuple[int, int] | None:
    """(offset, idx) of a valid later record with a higher index, if the damage has one."""
    pos = buf.find(RECORD_MAGIC, damaged_at + 1)
    while pos != -1:
        found = _parse_record(buf, pos)
        if found is not None and found[0][1] > last_idx:
            return pos, found[0][1]
        pos = buf.find(RECORD_MAGIC, pos + 1)
    return None


def scan_log(buf: bytes, path: Path) -> tuple[list[Entry], array[int], int]:
    """Parse a whole log file: (entries, record start offsets, end of the valid records).

    Bytes after the valid end are a torn tail (the caller cuts them). Raises CorruptDataError
    for a bad header, damage followed by a valid record, or an index that does not increase.
    """
    if len(buf) < HEADER_SIZE:
        raise CorruptDataError(f"{path}: offset 0: bad header ({len(buf)} bytes, too short)")
    magic, version, flags = _FILE_HEADER.unpack_from(buf)
    if magic != FILE_MAGIC:
        raise CorruptDataError(f"{path}: offset 0: bad header (magic {magic!r})")
    if version != FORMAT_VERSION or flags != 0:
        raise CorruptDataError(f"{path}: offset 8: unsupported format {version}/{flags:#x}")
    entries: list[Entry] = []
    starts: array[int] = array("Q")
    off, last_idx = HEADER_SIZE, -1
    while off < len(buf):
        parsed = _parse_record(buf, off)
        if parsed is None:
            later = _valid_record_after(buf, off, last_idx)
            if later is not None:
                raise CorruptDataError(
                    f"{path}: offset {off}: damaged record followed by a valid record "
                    f"(offset {later[0]}, index {later[1]}); not a torn tail"
                )
            break
        entry, nxt = parsed
        if entry[1] <= last_idx:
            raise CorruptDataError(
                f"{path}: offset {off}: index {entry[1]} does not follow index {last_idx}"
            )
        entries.append(entry)
        starts.append(off)
        off, last_idx = nxt, entry[1]
    return entries, starts, off


def encode_meta(term: int, voted_for: str | None) -> bytes:
    """Meta file contents: one line of canonical JSON, one line with its CRC32 in hex."""
    body = json.dumps(
        {"format": META_FORMAT, "term": term, "voted_for": voted_for},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return body + b"\n" + b"%08x\n" % zlib.crc32(body)


def decode_meta(data: bytes, path: Path) -> tuple[int, str | None]:
    """(term, voted_for) from meta file contents; CorruptDataError if damaged."""
    lines = data.split(b"\n")
    try:
        ok = len(lines) == 3 and lines[2] == b"" and int(lines[1], 16) == zlib.crc32(lines[0])
        obj = json.loads(lines[0]) if ok else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != META_FORMAT:
        raise CorruptDataError(f"{path}: offset 0: meta file damaged or of an unknown format")
    term, voted = obj.get("term"), obj.get("voted_for")
    if not isinstance(term, int) or term < 0 or not (voted is None or isinstance(voted, str)):
        raise CorruptDataError(f"{path}: offset 0: meta file has bad term/vote values")
    return term, voted


def _write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """pwrite all of `data` at `offset` (a regular file may take it in several writes)."""
    done = os.pwrite(fd, data, offset)
    view = memoryview(data)
    while done < len(view):
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        done += written


def _env_flag(name: str) -> bool:
    return os.environ.get(name) == "1"


class DurableJournal:
    """pysyncobj-compatible Raft journal that is durable once `flush()` returns.

    Entries are also kept in memory (a list), so reads never touch the disk.
    """

    def __init__(self, path: Path, observe_fsync: Callable[[float], None] | None = None) -> None:
        """`observe_fsync(seconds)` is told how long each real fsync took (metrics)."""
        self._path = Path(path)
        self._observe_fsync = observe_fsync
        self._meta_path = meta_path(self._path)
        self._crash_sim = _env_flag(CRASH_SIM_ENV)
        self._skip_fsync = _env_flag(UNSAFE_SKIP_FSYNC_ENV)
        self._fail_fsync_file = os.environ.get(UNSAFE_FAIL_FSYNC_FILE_ENV) or None
        if self._fail_fsync_file:
            logger.warning(
                "!!! %s=%s: the journal's fsyncs fail (EIO) while that file exists. For "
                "tests only. !!!",
                UNSAFE_FAIL_FSYNC_FILE_ENV,
                self._fail_fsync_file,
            )
        if self._skip_fsync:
            logger.warning(
                "!!! %s=1: journal %s will NEVER fsync. A power loss can lose acknowledged "
                "entries and let this node vote twice in a term. For tests only. !!!",
                UNSAFE_SKIP_FSYNC_ENV,
                self._path,
            )
        self._broken: str | None = None
        self._fd = self._commit_fd = self._marker_fd = self._dir_fd = -1
        self._entries: list[Entry] = []
        self._starts: array[int] = array("Q")
        self._size = self._flushed_size = self._inode = 0
        self._term: int = 0
        self._voted_for: str | None = None
        self._commit = self._commit_written = 1
        try:
            self._dir_fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._open()
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot open journal {self._path}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- opening

    def _open(self) -> None:
        """Load log, meta and commit index; cut a torn tail; make what was read durable."""
        for leftover in (temp_path(self._path), temp_path(self._meta_path)):
            leftover.unlink(missing_ok=True)
        if self._path.exists():
            self._open_existing()
        else:
            self._rewrite([])
        self._term, self._voted_for = self._load_meta()
        self._commit = self._commit_written = self._load_commit()
        self._sync_on_open()

    def _open_existing(self) -> None:
        buf = self._path.read_bytes()
        self._entries, self._starts, end = scan_log(buf, self._path)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        self._inode = os.fstat(self._fd).st_ino
        self._size = self._flushed_size = end
        if end < len(buf):
            logger.warning(
                "%s: cutting a torn tail of %d bytes at offset %d (a write cut short by a "
                "crash; never acknowledged)",
                self._path,
                len(buf) - end,
                end,
            )
            os.ftruncate(self._fd, end)

    def _load_meta(self) -> tuple[int, str | None]:
        try:
            data = self._meta_path.read_bytes()
        except FileNotFoundError:
            return 0, None
        return decode_meta(data, self._meta_path)

    def _load_commit(self) -> int:
        try:
            data = commit_path(self._path).read_bytes()
        except FileNotFoundError:
            return 1
        if len(data) == _COMMIT.size:
            magic, value, crc = _COMMIT.unpack(data)
            if magic == _COMMIT_MAGIC and crc == zlib.crc32(data[:12]):
                return int(value)
        logger.warning("%s: unreadable commit index ignored", commit_path(self._path))
        return 1

    def _sync_on_open(self) -> None:
        """Make the state just read durable: a previous process may have died before its
        flush, and this one must not acknowledge entries that only live in the page cache."""
        if self._skip_fsync:
            if self._crash_sim and read_marker(synced_marker_path(self._path)) is None:
                self._write_marker(0, 0)  # tracked, nothing durable yet
            return
        os.fdatasync(self._fd)
        if self._meta_path.exists():
            meta_fd = os.open(self._meta_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(meta_fd)
            finally:
                os.close(meta_fd)
        os.fsync(self._dir_fd)
        if self._crash_sim:
            self._write_marker(self._inode, self._size)
            self._copy_meta_for_sim()

    # ------------------------------------------------------ pysyncobj interface

    def add(self, command: bytes | bytearray | memoryview, idx: int, term: int) -> None:
        """Append an entry (page cache only; durable after the next `flush()`)."""
        if self._broken is not None:
            self._raise_broken()
        if type(command) is not bytes:
            if not isinstance(command, bytes | bytearray | memoryview):
                raise TypeError(f"command must be bytes, not {type(command).__name__}")
            command = bytes(command)
        if self._entries and idx <= self._entries[-1][1]:
            raise ValueError(f"index {idx} does not follow index {self._entries[-1][1]}")
        record = encode_record(command, idx, term)
        try:
            _write_all(self._fd, record, self._size)
        except OSError as exc:
            self._fail("append to", exc)
        self._starts.append(self._size)
        self._size += len(record)
        self._entries.append((command, idx, term))

    def clear(self) -> None:
        """Drop every entry (snapshot installed); durable before returning."""
        if self._broken is not None:
            self._raise_broken()
        self._rewrite([])
        self._entries = []

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries at positions >= entryFrom (a conflicting suffix); durable on return."""
        if self._broken is not None:
            self._raise_broken()
        start = slice(entryFrom, None).indices(len(self._entries))[0]
        if start >= len(self._entries):
            return
        new_size = self._starts[start]
        try:
            os.ftruncate(self._fd, new_size)
            synced = self._sync(self._fd, data_only=True)
        except OSError as exc:
            self._fail("truncate", exc)
        del self._entries[start:]
        del self._starts[start:]
        self._size = self._flushed_size = new_size
        if synced:
            self._write_marker(self._inode, new_size)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries at positions < entryTo (log compaction); atomic and durable on return."""
        if self._broken is not None:
            self._raise_broken()
        stop = slice(None, entryTo).indices(len(self._entries))[1]
        if stop <= 0:
            return
        kept = self._entries[stop:]
        self._rewrite(kept)
        self._entries = kept

    @overload
    def __getitem__(self, item: int) -> Entry: ...

    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        """pysyncobj's name for close()."""
        self.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remember the commit index; written lazily by `onOneSecondTimer` (no fsync)."""
        self._commit = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        """The commit index, never beyond the last entry (unsynced entries may be gone)."""
        return min(self._commit, self.last_index)

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        """Store term and vote; on disk before returning (Raft: before any vote leaves)."""
        if self._broken is not None:
            self._raise_broken()
        if (term, votedForNodeId) == (self._term, self._voted_for):
            return  # already durable
        self._store_meta(encode_meta(term, votedForNodeId))
        self._term, self._voted_for = term, votedForNodeId

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> str | None:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        """Write the commit index if it changed (best effort, no fsync)."""
        if self._broken is None and self._commit != self._commit_written:
            self._write_commit()

    # ------------------------------------------------------------- our own API

    def flush(self) -> bool:
        """Make every appended entry durable; True if an fdatasync was done."""
        if self._broken is not None:
            self._raise_broken()
        if self._size == self._flushed_size:
            return False
        try:
            synced = self._sync(self._fd, data_only=True)
        except OSError as exc:
            self._fail("fdatasync", exc)
        self._flushed_size = self._size
        if synced:
            self._write_marker(self._inode, self._size)
        return synced

    @property
    def dirty(self) -> bool:
        """True if entries were appended since the last flush()."""
        return self._size != self._flushed_size

    @property
    def last_index(self) -> int:
        """Raft index of the last entry, 0 if the log is empty."""
        return self._entries[-1][1] if self._entries else 0

    @property
    def path(self) -> Path:
        return self._path

    @property
    def size_bytes(self) -> int:
        """Bytes of the log file (the entries since the last compaction)."""
        return self._size

    @property
    def failure(self) -> str | None:
        """Why the journal refuses writes after a failed write or sync (None when healthy,
        "closed" after close())."""
        return self._broken

    def close(self) -> None:
        """Write the commit index and close the files. Does not fsync: anything not flushed
        was never acknowledged. Idempotent; every later write raises StorageError."""
        if self._broken is None:
            self.onOneSecondTimer()
        self._broken = self._broken or "closed"
        for name in ("_fd", "_commit_fd", "_marker_fd", "_dir_fd"):
            fd: int = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # ---------------------------------------------------------------- internals

    def _sync(self, fd: int, data_only: bool = False) -> bool:
        """fsync/fdatasync unless the unsafe switch is on; True if it really synced."""
        if self._skip_fsync:
            return False
        if self._fail_fsync_file and os.path.exists(self._fail_fsync_file):
            raise OSError(errno.EIO, f"fsync failure injected by {UNSAFE_FAIL_FSYNC_FILE_ENV}")
        started = time.perf_counter()
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
        if self._observe_fsync is not None:
            self._observe_fsync(time.perf_counter() - started)
        return True

    def _rewrite(self, entries: Iterable[Entry]) -> None:
        """Replace the log atomically with `entries`: temp file, fsync, rename, fsync dir."""
        tmp = temp_path(self._path)
        fd = -1
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            starts, size = self._write_records(fd, entries)
            synced = self._sync(fd)
            os.replace(tmp, self._path)
            synced = self._sync(self._dir_fd) and synced
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            self._fail("rewrite", exc)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._inode = fd, os.fstat(fd).st_ino
        self._starts, self._size, self._flushed_size = starts, size, size
        if synced:
            self._write_marker(self._inode, size)

    @staticmethod
    def _write_records(fd: int, entries: Iterable[Entry]) -> tuple[array[int], int]:
        """Write header + records in ~1 MiB chunks; (record start offsets, file size)."""
        starts: array[int] = array("Q")
        chunk = bytearray(_FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, 0))
        written = 0
        for command, idx, term in entries:
            starts.append(written + len(chunk))
            chunk += encode_record(command, idx, term)
            if len(chunk) >= _COPY_CHUNK:
                _write_all(fd, chunk, written)
                written += len(chunk)
                chunk.clear()
        _write_all(fd, chunk, written)
        return starts, written + len(chunk)

    def _store_meta(self, data: bytes) -> None:
        """Replace the meta file durably (temp, fsync, rename, fsync dir)."""
        tmp = temp_path(self._meta_path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data, 0)
                synced = self._sync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._meta_path)
            synced = self._sync(self._dir_fd) and synced
        except OSError as exc:
            self._fail("store term/vote in", exc)
        if synced and self._crash_sim:
            meta_synced_path(self._path).write_bytes(data)

    def _write_commit(self) -> None:
        value = self._commit
        head = _COMMIT_MAGIC + struct.pack("<Q", value)
        try:
            if self._commit_fd < 0:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                self._commit_fd = os.open(commit_path(self._path), flags, 0o600)
            _write_all(self._commit_fd, _COMMIT.pack(_COMMIT_MAGIC, value, zlib.crc32(head)), 0)
        except OSError as exc:
            logger.warning("%s: cannot write commit index: %s", commit_path(self._path), exc)
            return
        self._commit_written = value

    def _write_marker(self, inode: int, length: int) -> None:
        """Crash simulation: record what a power loss would leave (plain write, no fsync)."""
        if not self._crash_sim:
            return
        if self._marker_fd < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
            self._marker_fd = os.open(synced_marker_path(self._path), flags, 0o600)
        os.pwrite(self._marker_fd, _MARKER.pack(inode, length), 0)

    def _copy_meta_for_sim(self) -> None:
        copy = meta_synced_path(self._path)
        if self._meta_path.exists():
            copy.write_bytes(self._meta_path.read_bytes())
        else:
            copy.unlink(missing_ok=True)

    def _fail(self, what: str, exc: OSError) -> NoReturn:
        self._broken = f"failed to {what} {self._path}: {exc}"
        logger.error("journal unusable: %s", self._broken)
        raise StorageError(self._broken) from exc

    def _raise_broken(self) -> NoReturn:
        raise StorageError(f"journal {self._path} is unusable ({self._broken})")
