"""LmdbEnv: transactions, applied index, durability, images, digests, damage, threads."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gcs_ha.errors import CorruptDataError, DataDirError, InvalidRequestError, StorageError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import JOB_TABLE, KV_TABLE, MEMBERS_TABLE, NODE_TABLE

MAP = 1 << 28


def open_env(path: Path, map_size: int = MAP) -> LmdbEnv:
    return LmdbEnv(path, map_size=map_size)


def fill(env: LmdbEnv, items: dict[bytes, bytes], table: str = KV_TABLE, index: int = 0) -> None:
    with env.write() as txn:
        for key, value in items.items():
            txn.put(table, key, value)
        if index:
            txn.set_applied_index(index)


def write_image(env: LmdbEnv, path: Path) -> None:
    with open(path, "wb") as f:
        env.copy_to_fd(f.fileno())


SAMPLE = {b"a": b"1", b"b\x00": b"2", b"L" * 700: b"3"}


# -- basics ----------------------------------------------------------------------------


def test_new_env_is_empty_at_index_zero(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        assert env.applied_index() == 0
        assert env.digest() == (0, InMemoryStoreClient().digest())
        with env.read() as txn:
            assert list(txn.scan(KV_TABLE)) == []
    finally:
        env.close()


def test_write_txn_sees_its_own_writes_and_readers_do_not(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        txn = env.begin_write()
        assert txn.put(KV_TABLE, b"k", b"v") is True
        assert txn.get(KV_TABLE, b"k") == b"v"
        with env.read() as reader:
            assert reader.get(KV_TABLE, b"k") is None
        txn.commit()
        with env.read() as reader:
            assert reader.get(KV_TABLE, b"k") == b"v"
    finally:
        env.close()


def test_unknown_table_and_bad_key_leave_the_txn_usable(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        with env.write() as txn:
            txn.put(KV_TABLE, b"before", b"1")
            with pytest.raises(InvalidRequestError):
                txn.put("NOPE", b"k", b"v")
            with pytest.raises(InvalidRequestError):
                txn.get("NOPE", b"k")
            with pytest.raises(InvalidRequestError):
                txn.put(KV_TABLE, b"", b"v")
            with pytest.raises(InvalidRequestError):
                txn.set_applied_index(-1)
            txn.put(KV_TABLE, b"after", b"2")
        with env.read() as txn:
            assert dict(txn.scan(KV_TABLE)) == {b"before": b"1", b"after": b"2"}
    finally:
        env.close()


def test_next_job_id_in_txn_and_abort(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        with env.write() as txn:
            assert [txn.next_job_id(), txn.next_job_id()] == [1, 2]
        txn = env.begin_write()
        assert txn.next_job_id() == 3
        txn.abort()
        with env.write() as txn:
            assert txn.next_job_id() == 3
    finally:
        env.close()


def test_delete_and_delete_prefix_in_txn(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        fill(env, {b"p1": b"", b"p2": b"", b"q": b"", b"P" * 500: b""})
        with env.write() as txn:
            assert txn.delete(KV_TABLE, b"q") is True
            assert txn.delete(KV_TABLE, b"q") is False
            assert txn.delete_prefix(KV_TABLE, b"p") == 2
            assert txn.delete_prefix(KV_TABLE, b"P" * 450) == 1
        with env.read() as txn:
            assert list(txn.scan(KV_TABLE)) == []
    finally:
        env.close()


def test_scan_order_matches_sorted_for_random_long_keys(tmp_path: Path) -> None:
    rng = random.Random(7)
    stems = [b"", b"x" * 399, b"x" * 400, b"x" * 420, b"y" * 510]
    keys = {
        rng.choice(stems) + bytes(rng.choice(b"\x00ab\xff") for _ in range(rng.randint(1, 300)))
        for _ in range(300)
    }
    env = open_env(tmp_path / "e")
    try:
        fill(env, {key: key[-3:] for key in keys})
        with env.read() as txn:
            assert [k for k, _ in txn.scan(KV_TABLE)] == sorted(keys)
            for prefix in (b"x" * 399, b"x" * 400, b"x" * 400 + b"a", b"x" * 421, b"y" * 511):
                expect = sorted(k for k in keys if k.startswith(prefix))
                assert [k for k, _ in txn.scan(KV_TABLE, prefix)] == expect
                assert all(v == k[-3:] for k, v in txn.scan(KV_TABLE, prefix))
    finally:
        env.close()


# -- applied index ---------------------------------------------------------------------


def test_applied_index_commits_and_aborts_with_the_data(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        with env.write() as txn:
            txn.put(KV_TABLE, b"k", b"1")
            txn.set_applied_index(5)
            assert txn.applied_index() == 5
        assert env.applied_index() == 5
        with pytest.raises(RuntimeError), env.write() as txn:
            txn.put(KV_TABLE, b"k", b"2")
            txn.set_applied_index(6)
            raise RuntimeError("boom")
        assert env.applied_index() == 5
        with env.read() as reader:
            assert reader.get(KV_TABLE, b"k") == b"1"
            assert reader.applied_index() == 5
    finally:
        env.close()


# -- durability ------------------------------------------------------------------------


def test_committed_data_survives_reopen(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    fill(env, SAMPLE, index=9)
    before = env.digest()
    env.close()
    env = open_env(tmp_path / "e")
    try:
        assert env.digest() == before
        assert env.applied_index() == 9
    finally:
        env.close()


def test_committed_txn_survives_kill_9(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from gcs_ha.storage.lmdb_env import LmdbEnv\n"
        "env = LmdbEnv(Path(sys.argv[1]), map_size=1 << 28)\n"
        "with env.write() as txn:\n"
        "    txn.put('KV', b'k', b'v')\n"
        "    txn.set_applied_index(3)\n"
        "txn = env.begin_write()\n"
        "txn.put('KV', b'uncommitted', b'x')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    argv = [sys.executable, "-c", code, str(tmp_path / "e")]
    proc = subprocess.run(argv, check=False, timeout=60)
    assert proc.returncode == -9
    env = open_env(tmp_path / "e")
    try:
        with env.read() as txn:
            assert dict(txn.scan(KV_TABLE)) == {b"k": b"v"}
            assert txn.applied_index() == 3
    finally:
        env.close()


# -- images ----------------------------------------------------------------------------


def test_copy_and_install_image_round_trip(tmp_path: Path) -> None:
    src = open_env(tmp_path / "src")
    fill(src, SAMPLE, index=42)
    fill(src, {b"n1": b"node"}, table=NODE_TABLE)
    image = tmp_path / "image"
    write_image(src, image)
    expected = src.digest()
    src.close()
    assert LmdbEnv.read_image_applied_index(image) == 42

    dst = open_env(tmp_path / "dst")
    fill(dst, {b"stale": b"data"}, index=7)
    dst.close()
    LmdbEnv.install_image(tmp_path / "dst", image)
    assert image.exists()
    dst = open_env(tmp_path / "dst")
    try:
        assert dst.digest() == expected
        with dst.write() as txn:  # the installed env takes writes
            txn.put(KV_TABLE, b"new", b"1")
    finally:
        dst.close()


def test_install_image_into_a_new_dir(tmp_path: Path) -> None:
    src = open_env(tmp_path / "src")
    fill(src, SAMPLE, index=3)
    write_image(src, tmp_path / "image")
    expected = src.digest()
    src.close()
    LmdbEnv.install_image(tmp_path / "fresh", tmp_path / "image")
    env = open_env(tmp_path / "fresh")
    try:
        assert env.digest() == expected
    finally:
        env.close()


def test_copy_at_offset_is_raw_image_after_header(tmp_path: Path) -> None:
    src = open_env(tmp_path / "src")
    fill(src, SAMPLE, index=11)
    with open(tmp_path / "framed", "wb") as f:
        f.write(b"HEADER--")
        f.flush()
        src.copy_to_fd(f.fileno())
    src.close()
    (tmp_path / "image").write_bytes((tmp_path / "framed").read_bytes()[8:])
    assert LmdbEnv.read_image_applied_index(tmp_path / "image") == 11


def test_copy_txn_to_fd_copies_the_state_of_that_txn(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        fill(env, {b"old": b"1"}, index=1)
        expected = env.digest()
        txn = env.read_txn_for_copy()
        fill(env, {b"new": b"2"}, index=2)
        errors: list[BaseException] = []

        def copy() -> None:
            try:
                with open(tmp_path / "image", "wb") as f:
                    env.copy_txn_to_fd(txn, f.fileno())
            except BaseException as exc:
                errors.append(exc)
            finally:
                txn.abort()

        worker = threading.Thread(target=copy)
        worker.start()
        worker.join(timeout=30)
        assert not errors
        assert env.applied_index() == 2
    finally:
        env.close()
    assert LmdbEnv.read_image_applied_index(tmp_path / "image") == 1
    LmdbEnv.install_image(tmp_path / "restored", tmp_path / "image")
    restored = open_env(tmp_path / "restored")
    try:
        assert restored.digest() == expected
    finally:
        restored.close()


def test_damaged_image_is_refused_and_env_untouched(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    fill(env, SAMPLE, index=5)
    before = env.digest()
    write_image(env, tmp_path / "good")
    env.close()
    good = (tmp_path / "good").read_bytes()
    (tmp_path / "garbage").write_bytes(os.urandom(len(good)))
    (tmp_path / "truncated").write_bytes(good[: 2 * 4096])
    for name in ("garbage", "truncated", "missing"):
        with pytest.raises(CorruptDataError):
            LmdbEnv.read_image_applied_index(tmp_path / name)
        with pytest.raises(CorruptDataError):
            LmdbEnv.install_image(tmp_path / "e", tmp_path / name)
    env = open_env(tmp_path / "e")
    try:
        assert env.digest() == before
    finally:
        env.close()


# -- digests ---------------------------------------------------------------------------


def test_digest_equal_for_equal_data_written_differently(tmp_path: Path) -> None:
    one, two = open_env(tmp_path / "one"), open_env(tmp_path / "two")
    try:
        fill(one, SAMPLE, index=4)
        fill(one, {b"n": b"x"}, table=NODE_TABLE, index=5)
        fill(two, {b"n": b"x", b"tmp": b"gone"}, table=NODE_TABLE, index=1)
        for key, value in reversed(SAMPLE.items()):
            fill(two, {key: value})
        with two.write() as txn:
            txn.delete(NODE_TABLE, b"tmp")
            txn.set_applied_index(5)
        assert one.digest() == two.digest()
    finally:
        one.close()
        two.close()


def test_digest_matches_the_in_memory_store(tmp_path: Path) -> None:
    async def memory_digest() -> str:
        store = InMemoryStoreClient()
        for key, value in SAMPLE.items():
            await store.put(KV_TABLE, key, value)
        await store.put(MEMBERS_TABLE, b"r1", b"addr")
        await store.next_job_id()
        return store.digest()

    env = open_env(tmp_path / "e")
    try:
        fill(env, SAMPLE)
        fill(env, {b"r1": b"addr"}, table=MEMBERS_TABLE)
        with env.write() as txn:
            txn.next_job_id()
        assert env.digest()[1] == asyncio.run(memory_digest())
    finally:
        env.close()


def test_digest_differs_on_any_change(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        fill(env, SAMPLE)
        seen = {env.digest()[1]}
        changes: list[tuple[str, bytes, bytes]] = [
            (KV_TABLE, b"a", b"1!"),  # a value
            (KV_TABLE, b"c", b""),  # a new key with an empty value
            (JOB_TABLE, b"a", b"1!"),  # same entry in another table
            (KV_TABLE, b"L" * 700, b"4"),  # a long key's value
        ]
        for table, key, value in changes:
            fill(env, {key: value}, table=table)
            seen.add(env.digest()[1])
        with env.write() as txn:
            txn.set_applied_index(99)  # the index is reported, not hashed
        index, digest = env.digest()
        assert index == 99
        assert digest in seen
        assert len(seen) == 1 + len(changes)
    finally:
        env.close()


# -- damage and the data dir -----------------------------------------------------------


def test_garbage_data_file_raises_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "e"
    path.mkdir()
    (path / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(CorruptDataError, match=str(path)):
        open_env(path)


def test_truncated_data_file_raises_corrupt_instead_of_crashing(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    fill(env, {b"k%05d" % i: b"v" * 200 for i in range(2000)})
    env.close()
    data = tmp_path / "e" / "data.mdb"
    data.write_bytes(data.read_bytes()[: 3 * 4096])
    with pytest.raises(CorruptDataError, match="truncated"):
        open_env(tmp_path / "e")


def test_second_open_of_the_same_dir_is_refused(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    try:
        with pytest.raises(DataDirError, match="locked"):
            open_env(tmp_path / "e")
        write_image(env, tmp_path / "image")
        with pytest.raises(DataDirError, match="locked"):
            LmdbEnv.install_image(tmp_path / "e", tmp_path / "image")
    finally:
        env.close()
    open_env(tmp_path / "e").close()


def test_unusable_data_dir_raises_data_dir_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a dir")
    with pytest.raises(DataDirError):
        open_env(tmp_path / "file")
    with pytest.raises(DataDirError):
        open_env(tmp_path / "file" / "below")


def test_map_full_raises_storage_error(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e", map_size=1 << 20)
    try:
        with pytest.raises(StorageError, match="map_size"), env.write() as txn:
            for i in range(8):
                txn.put(KV_TABLE, b"k%d" % i, b"\x00" * (256 * 1024))
        with env.write() as txn:  # the env still works after the aborted txn
            txn.put(KV_TABLE, b"small", b"1")
        with env.read() as txn:
            assert [k for k, _ in txn.scan(KV_TABLE)] == [b"small"]
    finally:
        env.close()


# -- threads ---------------------------------------------------------------------------


def test_reads_proceed_while_another_thread_holds_the_write_txn(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    fill(env, {b"k": b"old"})
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with env.write() as txn:
            txn.put(KV_TABLE, b"k", b"new")
            holding.set()
            release.wait(timeout=30)

    async def read_on_loop() -> bytes | None:
        with env.read() as txn:
            return txn.get(KV_TABLE, b"k")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        assert asyncio.run(read_on_loop()) == b"old"
        with env.read() as txn:
            assert txn.get(KV_TABLE, b"k") == b"old"
    finally:
        release.set()
        thread.join(timeout=30)
    try:
        assert asyncio.run(read_on_loop()) == b"new"
    finally:
        env.close()


# -- a reader in another process ------------------------------------------------------

READER = """
import sys, time
from pathlib import Path
from gcs_ha.errors import StorageError
from gcs_ha.storage.lmdb_env import LmdbEnv
env = LmdbEnv.reader(Path(sys.argv[1]))
for line in sys.stdin:
    if line.strip() == "reopen":
        env.close()
        env = LmdbEnv.reader(Path(sys.argv[1]))
        print("reopened", flush=True)
        continue
    with env.read() as txn:
        print(txn.get("KV", b"k"), txn.applied_index(), flush=True)
try:
    with env.write() as txn:
        txn.put("KV", b"k", b"reader")
    print("wrote", flush=True)
except StorageError as exc:
    print("refused", type(exc).__name__, flush=True)
"""


def test_a_reader_in_another_process_sees_commits_and_keeps_its_generation(
    tmp_path: Path,
) -> None:
    """What a replica's front end does: read what the consensus process commits (unsynced
    commits included), keep reading the old file when an image replaces it, see the new
    one once it reopens, and never write."""
    path = tmp_path / "env"
    writer = LmdbEnv(path, sync=False, metasync=False)
    with writer.write() as txn:
        txn.put(KV_TABLE, b"k", b"v1")
        txn.set_applied_index(1)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None and reader.stdout is not None

    def ask(line: str = "read") -> str:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write(line + "\n")
        reader.stdin.flush()
        return reader.stdout.readline().strip()

    try:
        assert ask() == "b'v1' 1"
        with writer.write() as txn:
            txn.put(KV_TABLE, b"k", b"v2")
            txn.set_applied_index(2)
        assert ask() == "b'v2' 2"  # committed without sync, visible at once
        image = tmp_path / "image"
        with writer.write() as txn:
            txn.put(KV_TABLE, b"k", b"v3")
            txn.set_applied_index(3)
        with open(image, "wb") as f:
            writer.copy_to_fd(f.fileno())
        with writer.write() as txn:  # only in the old file, not in the image
            txn.put(KV_TABLE, b"k", b"old")
            txn.set_applied_index(9)
        writer.close()
        LmdbEnv.install_image(path, image)  # a snapshot install: a new generation
        writer = LmdbEnv(path, sync=False, metasync=False)
        assert writer.applied_index() == 3
        with writer.write() as txn:
            txn.put(KV_TABLE, b"k", b"v4")
            txn.set_applied_index(4)
        assert ask() == "b'old' 9"  # the old file: consistent, just old
        assert ask("reopen") == "reopened"
        assert ask() == "b'v4' 4"
        reader.stdin.close()
        assert reader.stdout.readline().strip() == "refused DataDirError"
    finally:
        reader.kill()
        reader.wait()
        writer.close()


def test_a_reader_needs_its_writer_to_have_created_the_environment(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match="no LMDB environment"):
        LmdbEnv.reader(tmp_path / "none")
