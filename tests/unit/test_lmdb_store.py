"""LmdbStoreClient beyond the contract: group commit, failed batches, close."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gcs_ha.errors import StorageError
from gcs_ha.storage.lmdb_store import LmdbStoreClient
from gcs_ha.storage.store_client import KV_TABLE


def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async def body() -> None:
        store = LmdbStoreClient.open(tmp_path / "e", map_size=1 << 28)
        try:
            await asyncio.gather(*(store.put(KV_TABLE, b"k%d" % i, b"v") for i in range(50)))
            assert store.writes == 50
            assert store.commits <= 2
            assert len(await store.keys(KV_TABLE)) == 50
        finally:
            await store.close()

    asyncio.run(body())


def test_a_failed_batch_fails_its_writes_and_later_writes_proceed(tmp_path: Path) -> None:
    async def body() -> None:
        store = LmdbStoreClient.open(tmp_path / "e", map_size=1 << 20)
        try:
            big = b"\x00" * (300 * 1024)
            results = await asyncio.gather(
                *(store.put(KV_TABLE, b"big%d" % i, big) for i in range(8)),
                return_exceptions=True,
            )
            assert all(isinstance(r, StorageError) for r in results)
            assert await store.keys(KV_TABLE) == []  # nothing of the aborted batch
            assert await store.put(KV_TABLE, b"small", b"1") is True
            assert await store.get(KV_TABLE, b"small") == b"1"
        finally:
            await store.close()

    asyncio.run(body())


def test_close_finishes_queued_writes_then_refuses_more(tmp_path: Path) -> None:
    async def write() -> None:
        store = LmdbStoreClient.open(tmp_path / "e", map_size=1 << 28)
        tasks = [asyncio.create_task(store.put(KV_TABLE, b"k%d" % i, b"v")) for i in range(10)]
        await asyncio.sleep(0)  # the puts are queued
        await store.close()
        assert all(task.done() and task.result() is True for task in tasks)
        with pytest.raises(StorageError, match="closed"):
            await store.put(KV_TABLE, b"late", b"v")

    async def read() -> list[bytes]:
        store = LmdbStoreClient.open(tmp_path / "e", map_size=1 << 28)
        try:
            return await store.keys(KV_TABLE)
        finally:
            await store.close()

    asyncio.run(write())
    assert len(asyncio.run(read())) == 10
