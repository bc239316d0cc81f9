"""The LMDB environment holding the GCS tables and the applied index: the only module that
imports `lmdb`. Entry points: `LmdbEnv` (open, `read()`, `begin_write()`, images,
digest) and `LmdbEnv.reader(path)` for a read-only opener in another process. Layout,
threads, durability and generations: DESIGN.md, "Mechanism".

Errors (gcs_ha.errors): InvalidRequestError for an unknown table or a bad key/value
(raised before anything is written, so the transaction stays usable); DataDirError for a
data dir that cannot be created, opened or locked; CorruptDataError for a damaged file
(including a truncated data.mdb, checked at open because LMDB would fault on it);
StorageError for any other LMDB failure (map full, disk error).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import lmdb

from gcs_ha.errors import CorruptDataError, DataDirError, InvalidRequestError, StorageError
from gcs_ha.storage.common import (
    DIGEST_TABLE_ORDER,
    JOB_COUNTER_KEY,
    TableDigest,
    check_key,
    check_prefix,
    check_value,
    decode_job_counter,
    encode_job_counter,
)
from gcs_ha.storage.keycodec import (
    INLINE_KEY_BYTES,
    is_long,
    ordered,
    pack,
    stored_key,
    unpack_checked,
    unpack_long,
)
from gcs_ha.storage.store_client import JOB_COUNTER_TABLE, TABLES

_META_DB = b"__gcs_ha_internal__"
_APPLIED_KEY = b"applied_index"
_DATA_FILE = "data.mdb"
_LMDB_LOCK_FILE = "lock.mdb"
_LOCK_FILE = "LOCK"
_MAX_DBS = len(TABLES) + 1
_CORRUPT = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.PanicError,
    lmdb.IncompatibleError,
)

_Db = lmdb._Database


def _raise_storage(exc: lmdb.Error, where: str) -> NoReturn:
    """Re-raise an LMDB error as the gcs_ha error it means, naming `where`."""
    if isinstance(exc, _CORRUPT):
        raise CorruptDataError(f"{where}: damaged LMDB data: {exc}") from exc
    if isinstance(exc, lmdb.MapFullError):
        raise StorageError(f"{where}: LMDB map is full, raise map_size: {exc}") from exc
    if isinstance(exc, lmdb.ReadonlyError | lmdb.LockError):
        raise DataDirError(f"{where}: {exc}") from exc
    raise StorageError(f"{where}: {exc}") from exc


def _u64(raw: bytes | None) -> int:
    return 0 if raw is None else int.from_bytes(raw, "big")


class ReadTxn:
    """A read view of every table at one committed state."""

    def __init__(
        self, txn: lmdb.Transaction[bytes], dbs: dict[str, _Db], meta: _Db, path: Path
    ) -> None:
        self._txn = txn
        self._dbs = dbs
        self._meta = meta
        self._path = path

    def _db(self, table: str) -> _Db:
        try:
            return self._dbs[table]
        except KeyError:
            raise InvalidRequestError(f"unknown table {table!r}") from None

    def get(self, table: str, key: bytes) -> bytes | None:
        """The value of `key`, or None."""
        db = self._db(table)
        check_key(key)
        try:
            raw = self._txn.get(stored_key(key), db=db)
        except lmdb.Error as exc:
            _raise_storage(exc, f"get from {table} in {self._path}")
        return None if raw is None else unpack_checked(key, raw)

    def exists(self, table: str, key: bytes) -> bool:
        """Whether `key` exists (without copying its value)."""
        db = self._db(table)
        check_key(key)
        try:
            with self._txn.cursor(db) as cursor:
                return cursor.set_key(stored_key(key))
        except lmdb.Error as exc:
            _raise_storage(exc, f"exists in {table} in {self._path}")

    def scan(self, table: str, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every key starting with `prefix`, in key byte order.

        Lazy: consume it before the transaction ends.
        """
        db = self._db(table)
        check_prefix(prefix)
        return ordered(self._stored_range(db, prefix), prefix)

    def _stored_range(self, db: _Db, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Stored records whose stored key starts with the stored form of `prefix`."""
        seek = prefix[: INLINE_KEY_BYTES]
        try:
            with self._txn.cursor(db) as cursor:
                if not cursor.set_range(seek):
                    return
                for skey, svalue in cursor.iternext():
                    if not skey.startswith(seek):
                        return
                    yield skey, svalue
        except lmdb.Error as exc:
            _raise_storage(exc, f"scan in {self._path}")

    def applied_index(self) -> int:
        """The applied index stored with this state (0 when never set)."""
        try:
            return _u64(self._txn.get(_APPLIED_KEY, db=self._meta))
        except lmdb.Error as exc:
            _raise_storage(exc, f"applied index in {self._path}")

    def abort(self) -> None:
        """End the transaction (a write one drops its writes). Safe to repeat."""
        self._txn.abort()


class WriteTxn(ReadTxn):
    """A write transaction; sees its own writes. One per environment at a time.

    Checks (InvalidRequestError) run before anything is written: a refused call leaves
    the transaction as it was and usable.
    """

    def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        """Store `value` (overwrite=False keeps an existing one); True if newly added."""
        db = self._db(table)
        check_key(key)
        check_value(value)
        skey = stored_key(key)
        svalue = pack(key, value)
        try:
            added = self._txn.put(skey, svalue, overwrite=False, db=db)
            if not added and overwrite:
                self._txn.put(skey, svalue, db=db)
        except lmdb.Error as exc:
            _raise_storage(exc, f"put into {table} in {self._path}")
        return added

    def delete(self, table: str, key: bytes) -> bool:
        """Delete `key`; True when it existed."""
        db = self._db(table)
        check_key(key)
        try:
            return self._txn.delete(stored_key(key), db=db)
        except lmdb.Error as exc:
            _raise_storage(exc, f"delete from {table} in {self._path}")

    def delete_prefix(self, table: str, prefix: bytes) -> int:
        """Delete every key starting with `prefix`; returns how many."""
        db = self._db(table)
        check_prefix(prefix)
        records = self._stored_range(db, prefix)
        if len(prefix) <= INLINE_KEY_BYTES:
            doomed = [skey for skey, _ in records]
        else:
            doomed = [
                skey
                for skey, svalue in records
                if is_long(skey) and unpack_long(svalue)[0].startswith(prefix)
            ]
        try:
            for skey in doomed:
                self._txn.delete(skey, db=db)
        except lmdb.Error as exc:
            _raise_storage(exc, f"delete_prefix in {table} in {self._path}")
        return len(doomed)

    def next_job_id(self) -> int:
        """Increment the job counter (JOB_COUNTER table); the first call returns 1."""
        db = self._dbs[JOB_COUNTER_TABLE]
        try:
            value = decode_job_counter(self._txn.get(JOB_COUNTER_KEY, db=db)) + 1
            self._txn.put(JOB_COUNTER_KEY, encode_job_counter(value), db=db)
        except lmdb.Error as exc:
            _raise_storage(exc, f"next_job_id in {self._path}")
        return value

    def set_applied_index(self, index: int) -> None:
        """Store the applied index; committed atomically with this transaction's data."""
        if index < 0:
            raise InvalidRequestError(f"applied index {index} is negative")
        try:
            self._txn.put(_APPLIED_KEY, index.to_bytes(8, "big"), db=self._meta)
        except lmdb.Error as exc:
            _raise_storage(exc, f"set_applied_index in {self._path}")

    def commit(self) -> None:
        """Make the writes durable (with sync=True) and visible; StorageError on failure."""
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            _raise_storage(exc, f"commit in {self._path}")


class LmdbEnv:
    """One LMDB environment directory holding every table and the applied index."""

    def __init__(
        self,
        path: Path,
        *,
        map_size: int = 8 << 30,
        sync: bool = True,
        metasync: bool | None = None,
        max_readers: int = 1024,
        lock_wait_s: float = 0.0,
    ) -> None:
        """sync: fsync the data pages at each commit. metasync (default: = sync): also fsync
        the meta page; without it a system crash may undo the LAST committed transaction
        (never corrupt the environment) — right when something else (the Raft journal)
        holds that transaction durably and replays it. lock_wait_s: how long to wait for
        another opener to let go of the directory before DataDirError."""
        self.path = Path(path)
        self._lock_fd = _lock_dir(self.path, lock_wait_s)
        self.read_only = False
        self._closed = False
        try:
            meta = sync if metasync is None else metasync
            self._env = _open_env(self.path, map_size, (sync, meta), max_readers)
            self._dbs, self._meta = _open_dbs(self._env, self.path)
        except BaseException:
            os.close(self._lock_fd)
            raise

    @classmethod
    def reader(cls, path: Path, *, max_readers: int = 1024) -> LmdbEnv:
        """Open the environment at `path` read-only, next to its writer (another process).

        Takes no LOCK file. The writer must have opened it first (every table exists).
        DataDirError when there is none, CorruptDataError when it is damaged. Writes
        through it raise StorageError.
        """
        env = cls.__new__(cls)
        env.path = Path(path)
        env._lock_fd = -1
        env.read_only = True
        env._closed = False
        if not (env.path / _DATA_FILE).exists():
            raise DataDirError(f"no LMDB environment in {env.path}")
        env._env = _open_env(env.path, 0, (False, False), max_readers, read_only=True)
        try:
            env._dbs, env._meta = _open_dbs(env._env, env.path, create=False)
        except BaseException:
            env._env.close()
            raise
        return env

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        """A read-only transaction; LMDB errors inside become gcs_ha errors."""
        try:
            with self._env.begin() as txn:
                yield ReadTxn(txn, self._dbs, self._meta, self.path)
        except lmdb.Error as exc:
            _raise_storage(exc, f"reading {self.path}")

    @contextlib.contextmanager
    def write(self) -> Iterator[WriteTxn]:
        """A write transaction: commits on normal exit, aborts on an exception."""
        wtxn = self.begin_write()
        try:
            yield wtxn
        except lmdb.Error as exc:
            wtxn.abort()
            _raise_storage(exc, f"writing {self.path}")
        except BaseException:
            wtxn.abort()
            raise
        wtxn.commit()

    def begin_write(self) -> WriteTxn:
        """An explicit write transaction; end it with commit() or abort() in this thread."""
        try:
            txn = self._env.begin(write=True)
        except lmdb.Error as exc:
            _raise_storage(exc, f"writing {self.path}")
        return WriteTxn(txn, self._dbs, self._meta, self.path)

    def sync(self) -> None:
        """Flush every commit to disk (fsync), whatever the environment's sync flags."""
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            _raise_storage(exc, f"syncing {self.path}")

    def applied_index(self) -> int:
        """The applied index of the last committed transaction (0 on a new environment)."""
        with self.read() as txn:
            return txn.applied_index()

    def live_bytes(self) -> int:
        """Bytes of the pages that hold data now (every table, the metadata and LMDB's own
        catalogue): what a compacted copy takes, and what the data file needs at the
        least. Pages freed by deletes are reused before the file grows."""
        try:
            with self._env.begin() as txn:
                stats = [txn.stat(db) for db in (*self._dbs.values(), self._meta)]
                stats.append(self._env.stat())
        except lmdb.Error as exc:
            _raise_storage(exc, f"reading {self.path}")
        pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
        return (pages + 2) * stats[-1]["psize"]  # + LMDB's two meta pages

    def read_txn_for_copy(self) -> ReadTxn:
        """A read transaction outside any `with` block, to copy this exact state later,
        possibly from another thread (one thread at a time); end it with abort().

        It pins the pages of its state: while it is open LMDB cannot reuse them, so the
        data file grows with the writes made meanwhile. Keep it short.
        """
        try:
            txn = self._env.begin()
        except lmdb.Error as exc:
            _raise_storage(exc, f"reading {self.path}")
        return ReadTxn(txn, self._dbs, self._meta, self.path)

    def copy_txn_to_fd(self, txn: ReadTxn, fd: int) -> None:
        """Like copy_to_fd, but of the state `txn` sees (from read_txn_for_copy)."""
        self._copy(fd, txn._txn)

    def copy_to_fd(self, fd: int) -> None:
        """Write a consistent, compacted image of the whole environment (applied index
        included) to `fd` at its current offset; fsynced when `fd` is a regular file.

        LMDB writes to the descriptor directly: flush a file object's buffer first."""
        self._copy(fd, None)

    def _copy(self, fd: int, txn: lmdb.Transaction[bytes] | None) -> None:
        try:
            self._env.copyfd(fd, compact=True, txn=txn)
        except lmdb.Error as exc:
            _raise_storage(exc, f"copying {self.path}")
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)

    def digest(self) -> tuple[int, str]:
        """(applied index, sha256 hex over every table's entries) at one read transaction."""
        digest = TableDigest()
        with self.read() as txn:
            for table in DIGEST_TABLE_ORDER:
                digest.table(table)
                digest.entries(txn.scan(table))
            return txn.applied_index(), digest.hexdigest()

    def close(self) -> None:
        """Close the environment and release the directory lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._env.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @staticmethod
    def install_image(path: Path, image_path: Path) -> None:
        """Replace the (closed) environment at `path` by an image from copy_to_fd.

        The image is checked first (CorruptDataError leaves `path` untouched), copied
        beside data.mdb, fsynced, renamed over it, and the directory fsynced. lock.mdb is
        unlinked: the next opener starts a new generation, readers of the old file keep it
        (storage/DESIGN.md, "Images"). The image file itself is left as it is.
        """
        LmdbEnv.read_image_applied_index(image_path)
        path = Path(path)
        lock_fd = _lock_dir(path)
        try:
            tmp = path / (_DATA_FILE + ".installing")
            shutil.copyfile(image_path, tmp)
            _fsync_path(tmp)
            os.replace(tmp, path / _DATA_FILE)
            (path / _LMDB_LOCK_FILE).unlink(missing_ok=True)
            _fsync_path(path)
        except OSError as exc:
            raise DataDirError(f"cannot install image {image_path} into {path}: {exc}") from exc
        finally:
            os.close(lock_fd)

    @staticmethod
    def read_image_applied_index(image_path: Path) -> int:
        """The applied index inside an image file; CorruptDataError if it is no valid image."""
        where = f"image {image_path}"
        try:
            env = lmdb.open(
                str(image_path), subdir=False, readonly=True, lock=False, max_dbs=_MAX_DBS
            )
        except (lmdb.Error, OSError) as exc:
            raise CorruptDataError(f"{where} cannot be opened as an LMDB image: {exc}") from exc
        try:
            _check_size(env, Path(image_path))
            with env.begin() as txn:
                meta = env.open_db(_META_DB, txn=txn, create=False)
                return _u64(txn.get(_APPLIED_KEY, db=meta))
        except lmdb.NotFoundError as exc:
            raise CorruptDataError(f"{where} is not a gcs-ha image (no meta table)") from exc
        except lmdb.Error as exc:
            _raise_storage(exc, where)
        finally:
            env.close()


def _lock_dir(path: Path, wait_s: float = 0.0) -> int:
    """Create `path` and flock its LOCK file, waiting up to `wait_s` for another holder;
    DataDirError when impossible or still held."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DataDirError(f"data dir {path} is not usable: {exc}") from exc
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            held = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            if not held or time.monotonic() >= deadline:
                os.close(fd)
                if held:
                    raise DataDirError(
                        f"data dir {path} is locked by another LmdbEnv or process"
                    ) from exc
                raise DataDirError(f"cannot lock data dir {path}: {exc}") from exc
        time.sleep(0.05)


def _open_env(
    path: Path,
    map_size: int,
    sync: tuple[bool, bool],
    max_readers: int,
    read_only: bool = False,
) -> lmdb.Environment:
    """Open the LMDB environment in `path`, checking its data file is whole. map_size 0
    (read-only): the size the writer gave it."""
    try:
        env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=_MAX_DBS,
            max_readers=max_readers,
            sync=sync[0],
            metasync=sync[1],
            max_spare_txns=4,
            readonly=read_only,
            create=not read_only,
        )
    except _CORRUPT as exc:
        raise CorruptDataError(f"LMDB data in {path} is damaged: {exc}") from exc
    except lmdb.Error as exc:
        raise DataDirError(f"cannot open LMDB in {path}: {exc}") from exc
    except OSError as exc:
        raise DataDirError(f"cannot open LMDB in {path}: {exc}") from exc
    try:
        _check_size(env, path / _DATA_FILE)
    except BaseException:
        env.close()
        raise
    return env


def _check_size(env: lmdb.Environment, data_file: Path) -> None:
    """CorruptDataError when the file is shorter than its meta page says: reading the
    missing pages through the memory map would kill the process with SIGBUS."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = data_file.stat().st_size
    if have < need:
        raise CorruptDataError(f"{data_file} is truncated: {have} bytes, its meta says {need}")


def _open_dbs(env: lmdb.Environment, path: Path, create: bool = True) -> tuple[dict[str, _Db], _Db]:
    """Open (creating if needed and `create`) one sub-database per table and the meta one."""
    try:
        if create:
            with env.begin(write=True) as txn:
                dbs = {table: env.open_db(table.encode(), txn=txn) for table in sorted(TABLES)}
                meta = env.open_db(_META_DB, txn=txn)
        else:  # py-lmdb opens each handle in a read transaction of its own that keeps it
            dbs = {table: env.open_db(table.encode(), create=False) for table in sorted(TABLES)}
            meta = env.open_db(_META_DB, create=False)
    except lmdb.NotFoundError as exc:
        env.close()
        raise DataDirError(f"{path}: a table is missing (not opened by its writer yet)") from exc
    except lmdb.Error as exc:
        env.close()
        _raise_storage(exc, f"opening tables in {path}")
    return dbs, meta


def _fsync_path(path: Path) -> None:
    """fsync a file or directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
