"""A replica's data dir: its identity (identity.json) and its exclusive flock (lock).
Layout: docs/operations.md.

`DataDir.open` raises DataDirError (naming the path and the problem) when the dir
cannot be created, is locked by another running process, belongs to another node or
cluster, or holds an unreadable identity file. The lock dies with the process, so a
crashed replica never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gcs_ha.errors import DataDirError

IDENTITY_FILE = "identity.json"
LOCK_FILE = "lock"
IDENTITY_FORMAT = 1


@dataclass(frozen=True)
class Identity:
    """Who a data dir belongs to."""

    node_id: str
    cluster_name: str


def read_identity(path: Path) -> Identity | None:
    """The identity recorded in data dir `path`, or None when it has none yet."""
    file = path / IDENTITY_FILE
    try:
        raw = json.loads(file.read_text())
        if raw.get("format") != IDENTITY_FORMAT:
            raise DataDirError(f"{file}: unknown identity format {raw.get('format')!r}")
        return Identity(node_id=str(raw["node_id"]), cluster_name=str(raw["cluster_name"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise DataDirError(f"{file}: unreadable identity file ({exc})") from exc


def _write_identity(path: Path, identity: Identity) -> None:
    """Write identity.json atomically (temp file, fsync, rename, fsync of the dir)."""
    record = {
        "format": IDENTITY_FORMAT,
        "node_id": identity.node_id,
        "cluster_name": identity.cluster_name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path / (IDENTITY_FILE + ".tmp")
    with open(tmp, "w") as out:
        json.dump(record, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path / IDENTITY_FILE)
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class DataDir:
    """An opened, locked data dir of one replica. Use as a context manager or call close()."""

    def __init__(self, path: Path, identity: Identity, lock_fd: int, created: bool) -> None:
        self.path = path
        self.identity = identity
        self.created = created
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, path: Path, node_id: str, cluster_name: str) -> DataDir:
        """Create or reopen `path` for replica `node_id` of `cluster_name` and lock it."""
        path = path.absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create data dir {path}: {exc.strerror or exc}") from exc
        if not path.is_dir():
            raise DataDirError(f"data dir {path} is not a directory")
        lock_fd = _lock(path)
        try:
            identity, created = _claim(path, Identity(node_id, cluster_name))
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, identity, lock_fd, created)

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DataDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _lock(path: Path) -> int:
    """An fd holding an exclusive flock on `path/lock`; DataDirError when another holds it."""
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DataDirError(f"cannot open {lock_path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        who = f" (pid {holder})" if holder else ""
        raise DataDirError(
            f"data dir {path} is in use by another gcs-ha process{who}; "
            "each replica needs its own data dir"
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> int | None:
    """The pid a lock holder wrote into the lock file, if readable."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


def _claim(path: Path, wanted: Identity) -> tuple[Identity, bool]:
    """Check (or, for an empty dir, write) the identity; returns it and whether it was new."""
    found = read_identity(path)
    if found is None:
        ignorable = {LOCK_FILE, IDENTITY_FILE + ".tmp", "lost+found"}
        leftovers = sorted(p.name for p in path.iterdir() if p.name not in ignorable)
        if leftovers:
            raise DataDirError(
                f"data dir {path} has no {IDENTITY_FILE} but is not empty "
                f"({', '.join(leftovers[:5])}); refusing to adopt it"
            )
        _write_identity(path, wanted)
        return wanted, True
    if found.node_id != wanted.node_id:
        raise DataDirError(
            f"data dir {path} belongs to node {found.node_id!r}, not {wanted.node_id!r}"
        )
    if found.cluster_name != wanted.cluster_name:
        raise DataDirError(
            f"data dir {path} belongs to cluster {found.cluster_name!r}, "
            f"not {wanted.cluster_name!r}"
        )
    return found, False
