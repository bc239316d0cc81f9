"""Large internal-KV values in chunks (gcs_ha/storage/large_values.py), over the real
in-memory and LMDB stores, with chunks of a few bytes so every path runs fast."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gcs_ha.errors import CorruptDataError, InvalidRequestError
from gcs_ha.storage.internal_kv import InternalKv, make_key
from gcs_ha.storage.large_values import (
    MAGIC,
    LargeValues,
    Manifest,
    chunk_key,
    decode,
    encode_small,
)
from gcs_ha.storage.lmdb_store import LmdbStoreClient
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import CHUNKS_TABLE, KV_TABLE, StoreClient

CHUNK = 1000
Test = Callable[[StoreClient, LargeValues], Awaitable[None]]


@pytest.fixture(params=["memory", "lmdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], StoreClient]:
    if request.param == "memory":
        return InMemoryStoreClient
    return lambda: LmdbStoreClient.open(tmp_path / "lmdb", sync=False, map_size=1 << 26)


def run(make_store: Callable[[], StoreClient], test: Test) -> None:
    async def main() -> None:
        store = make_store()
        try:
            await test(store, LargeValues(store, chunk_bytes=CHUNK, max_value_bytes=100_000))
        finally:
            if isinstance(store, LmdbStoreClient):
                await store.close()

    asyncio.run(main())


async def chunk_groups(store: StoreClient) -> set[bytes]:
    return {key[:16] for key in await store.keys(CHUNKS_TABLE, b"")}


def test_encoding_keeps_plain_values_as_they_are() -> None:
    assert encode_small(b"plain") == b"plain"
    assert decode(b"plain") == b"plain"
    tricky = MAGIC + b"M looks like a manifest"
    assert encode_small(tricky) != tricky
    assert decode(encode_small(tricky)) == tricky
    manifest = Manifest(b"g" * 16, 3, 2500)
    assert decode(manifest.encode()) == manifest
    with pytest.raises(CorruptDataError):
        decode(MAGIC + b"?")


def test_a_large_value_is_written_in_chunks_and_read_whole(
    make_store: Callable[[], StoreClient],
) -> None:
    async def test(store: StoreClient, values: LargeValues) -> None:
        value = os.urandom(10 * CHUNK + 7)
        assert await values.put(b"k", value, overwrite=True) is True
        assert await values.get(b"k") == value
        stored = decode(await store.get(KV_TABLE, b"k") or b"")
        assert isinstance(stored, Manifest) and (stored.count, stored.size) == (11, len(value))
        assert len(await store.keys(CHUNKS_TABLE, b"")) == 12  # 11 chunks and the owner
        assert await values.sweep() == 0  # named by its manifest
        assert await values.get(b"missing") is None

    run(make_store, test)


def test_overwrite_and_delete_leave_chunks_to_the_sweep(
    make_store: Callable[[], StoreClient],
) -> None:
    async def test(store: StoreClient, values: LargeValues) -> None:
        first, second = os.urandom(3 * CHUNK), os.urandom(4 * CHUNK)
        await values.put(b"k", first, overwrite=True)
        assert await values.put(b"k", second, overwrite=True) is False
        assert await values.get(b"k") == second
        assert len(await chunk_groups(store)) == 2
        assert await values.sweep() == 1
        assert await values.get(b"k") == second
        await values.put(b"k", b"small", overwrite=True)
        assert await values.sweep() == 1
        assert await chunk_groups(store) == set()
        await values.put(b"k", first, overwrite=True)
        await store.delete(KV_TABLE, b"k")
        assert await values.sweep() == 1
        assert await chunk_groups(store) == set()

    run(make_store, test)


def test_overwrite_false_keeps_the_old_value_and_uploads_nothing(
    make_store: Callable[[], StoreClient],
) -> None:
    async def test(store: StoreClient, values: LargeValues) -> None:
        await values.put(b"k", b"old", overwrite=True)
        assert await values.put(b"k", os.urandom(5 * CHUNK), overwrite=False) is False
        assert await values.get(b"k") == b"old"
        assert await chunk_groups(store) == set()
        with pytest.raises(InvalidRequestError, match="exceeds the limit of 100000"):
            await values.put(b"k", b"x" * 100_001, overwrite=True)
        assert await values.get(b"k") == b"old"

    run(make_store, test)


def test_a_put_cut_short_is_swept_but_not_one_in_progress(
    make_store: Callable[[], StoreClient],
) -> None:
    async def test(store: StoreClient, values: LargeValues) -> None:
        # A put the old leader did not finish: owner record and one chunk, no manifest.
        group = b"c" * 16
        await store.put(CHUNKS_TABLE, chunk_key(group, 0xFFFFFFFF), b"k")
        await store.put(CHUNKS_TABLE, chunk_key(group, 0), b"x" * CHUNK)
        # A put in progress here: the sweep runs while its chunks are being written.
        gate = asyncio.Event()
        real_put = store.put

        async def slow_put(table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
            if table == CHUNKS_TABLE and key.endswith(b"\x00\x00\x00\x02"):
                await gate.wait()
            return await real_put(table, key, value, overwrite)

        store.put = slow_put  # type: ignore[method-assign]
        value = os.urandom(3 * CHUNK)
        writing = asyncio.get_running_loop().create_task(values.put(b"j", value, True))
        await asyncio.sleep(0.05)
        assert await values.sweep() == 1  # the one cut short, not the one in progress
        gate.set()
        assert await writing is True
        assert await values.get(b"j") == value
        assert await values.sweep() == 0

    run(make_store, test)


def test_a_read_racing_an_overwrite_reads_again(make_store: Callable[[], StoreClient]) -> None:
    async def test(store: StoreClient, values: LargeValues) -> None:
        await values.put(b"k", os.urandom(2 * CHUNK), overwrite=True)
        old = await store.get(KV_TABLE, b"k")
        assert old is not None
        await values.put(b"k", b"new", overwrite=True)
        await values.sweep()
        assert await values.resolve(b"k", old) == b"new"  # read the manifest again
        await store.delete(KV_TABLE, b"k")
        assert await values.resolve(b"k", old) is None
        await store.put(KV_TABLE, b"k", old)  # a manifest whose chunks are gone for good
        with pytest.raises(CorruptDataError, match="missing"):
            await values.get(b"k")

    run(make_store, test)


def test_internal_kv_reads_and_writes_through_chunks(
    make_store: Callable[[], StoreClient],
) -> None:
    async def test(store: StoreClient, values: LargeValues) -> None:
        kv = InternalKv(store)
        kv.large_values = values
        value = os.urandom(3 * CHUNK + 1)
        assert await kv.put(b"ns", b"big", value) is True
        await kv.put(b"ns", b"small", MAGIC + b"E")
        assert await kv.get(b"ns", b"big") == value
        found = await kv.multi_get(b"ns", [b"big", b"small", b"none"])
        assert found == {b"big": value, b"small": MAGIC + b"E"}
        assert await kv.keys(b"ns") == [b"big", b"small"]
        assert await kv.delete(b"ns", b"", del_by_prefix=True) == 2
        assert await store.get(KV_TABLE, make_key(b"ns", b"big")) is None
        assert await values.sweep() == 1

    run(make_store, test)
