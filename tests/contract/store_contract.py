"""The StoreClient contract: one suite every backend must pass.

To run it against a backend, subclass `StoreClientContract` in a test module and give it
`open_store`, an async context manager yielding a fresh, empty store kept in `tmp_path`
(see test_store_clients.py). Set `durable = True` when opening the same `tmp_path` again
must find the data written before (the persistence test then runs).

Each test is an `async def test_x(self, store)`; `contract_test` turns it into a plain
pytest test that runs it under asyncio.run (pytest-asyncio is not used).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gcs_ha.errors import InvalidRequestError
from gcs_ha.storage.store_client import (
    ACTOR_TABLE,
    JOB_COUNTER_TABLE,
    JOB_TABLE,
    KV_TABLE,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    MEMBERS_TABLE,
    NODE_TABLE,
    TABLES,
    StoreClient,
)

AsyncBody = Callable[[Any, StoreClient], Awaitable[None]]

# Keys around LMDB's 511-byte key limit and the 400-byte inline part of long keys.
LONG = b"L" * 600
BINARY_KEYS = [b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"a\x00b"]


def contract_test(body: AsyncBody) -> Callable[[Any, Path], None]:
    """A pytest test (self, tmp_path) running `body(self, store)` in a fresh store."""

    def test(self: StoreClientContract, tmp_path: Path) -> None:
        async def main() -> None:
            async with self.open_store(tmp_path) as store:
                await body(self, store)

        asyncio.run(main())

    test.__name__ = body.__name__
    test.__qualname__ = body.__qualname__
    test.__doc__ = body.__doc__
    return test


class StoreClientContract:
    """The contract tests; subclasses supply `open_store`."""

    durable: ClassVar[bool] = False

    @contextlib.asynccontextmanager
    async def open_store(self, tmp_path: Path) -> AsyncIterator[StoreClient]:
        """Yield a store; the same `tmp_path` again reopens it when `durable`."""
        raise NotImplementedError
        yield  # pragma: no cover

    # -- put / get ---------------------------------------------------------------------

    @contract_test
    async def test_get_missing_is_none(self, store: StoreClient) -> None:
        assert await store.get(KV_TABLE, b"nope") is None
        assert not await store.exists(KV_TABLE, b"nope")

    @contract_test
    async def test_put_new_then_get(self, store: StoreClient) -> None:
        assert await store.put(KV_TABLE, b"k", b"v1") is True
        assert await store.get(KV_TABLE, b"k") == b"v1"
        assert await store.exists(KV_TABLE, b"k")

    @contract_test
    async def test_put_overwrite_replaces_and_reports_not_added(self, store: StoreClient) -> None:
        await store.put(KV_TABLE, b"k", b"v1")
        assert await store.put(KV_TABLE, b"k", b"v2") is False
        assert await store.get(KV_TABLE, b"k") == b"v2"

    @contract_test
    async def test_put_no_overwrite_keeps_existing(self, store: StoreClient) -> None:
        assert await store.put(KV_TABLE, b"k", b"v1", overwrite=False) is True
        assert await store.put(KV_TABLE, b"k", b"v2", overwrite=False) is False
        assert await store.get(KV_TABLE, b"k") == b"v1"

    @contract_test
    async def test_empty_value(self, store: StoreClient) -> None:
        assert await store.put(KV_TABLE, b"k", b"") is True
        assert await store.get(KV_TABLE, b"k") == b""
        assert await store.exists(KV_TABLE, b"k")

    @contract_test
    async def test_tables_are_separate(self, store: StoreClient) -> None:
        await store.put(JOB_TABLE, b"k", b"job")
        await store.put(NODE_TABLE, b"k", b"node")
        assert await store.get(JOB_TABLE, b"k") == b"job"
        assert await store.get(NODE_TABLE, b"k") == b"node"
        assert await store.get(ACTOR_TABLE, b"k") is None
        assert await store.delete(JOB_TABLE, b"k")
        assert await store.get(NODE_TABLE, b"k") == b"node"

    @contract_test
    async def test_every_table_is_usable(self, store: StoreClient) -> None:
        """Only our key is compared: a replicated store's replicas register themselves in
        the members table on their own schedule (late under load)."""
        for table in sorted(TABLES):
            assert await store.put(table, b"key", table.encode())
        for table in sorted(TABLES):
            stored = await store.get_all(table)
            assert stored.get(b"key") == table.encode(), (table, stored)
            assert table == MEMBERS_TABLE or stored == {b"key": table.encode()}, (table, stored)

    @contract_test
    async def test_binary_keys(self, store: StoreClient) -> None:
        for i, key in enumerate(BINARY_KEYS):
            await store.put(KV_TABLE, key, bytes([i]) * 3)
        for i, key in enumerate(BINARY_KEYS):
            assert await store.get(KV_TABLE, key) == bytes([i]) * 3
        assert await store.keys(KV_TABLE) == sorted(BINARY_KEYS)
        assert await store.keys(KV_TABLE, b"\x00") == [b"\x00", b"\x00\x00", b"\x00\xff"]
        assert await store.keys(KV_TABLE, b"\xff") == [b"\xff", b"\xff\x00", b"\xff\xff"]

    @contract_test
    async def test_large_value(self, store: StoreClient) -> None:
        value = bytes(range(256)) * 4096  # 1 MiB
        await store.put(KV_TABLE, b"big", value)
        assert await store.get(KV_TABLE, b"big") == value

    # -- get_all / multi_get -----------------------------------------------------------

    @contract_test
    async def test_get_all(self, store: StoreClient) -> None:
        assert await store.get_all(ACTOR_TABLE) == {}
        data = {b"a": b"1", b"b": b"2", LONG: b"3", LONG + b"x": b"4"}
        for key, value in data.items():
            await store.put(ACTOR_TABLE, key, value)
        await store.put(JOB_TABLE, b"other", b"x")
        assert await store.get_all(ACTOR_TABLE) == data

    @contract_test
    async def test_multi_get_leaves_out_missing(self, store: StoreClient) -> None:
        await store.put(KV_TABLE, b"a", b"1")
        await store.put(KV_TABLE, LONG, b"2")
        got = await store.multi_get(KV_TABLE, [b"a", b"missing", LONG, LONG + b"missing"])
        assert got == {b"a": b"1", LONG: b"2"}
        assert await store.multi_get(KV_TABLE, []) == {}

    # -- delete ------------------------------------------------------------------------

    @contract_test
    async def test_delete(self, store: StoreClient) -> None:
        await store.put(KV_TABLE, b"k", b"v")
        assert await store.delete(KV_TABLE, b"k") is True
        assert await store.get(KV_TABLE, b"k") is None
        assert await store.delete(KV_TABLE, b"k") is False

    @contract_test
    async def test_batch_delete_counts_existing(self, store: StoreClient) -> None:
        for key in (b"a", b"b", b"c", LONG):
            await store.put(KV_TABLE, key, b"v")
        assert await store.batch_delete(KV_TABLE, [b"a", b"missing", LONG, b"a"]) == 2
        assert await store.keys(KV_TABLE) == [b"b", b"c"]
        assert await store.batch_delete(KV_TABLE, []) == 0

    @contract_test
    async def test_delete_prefix(self, store: StoreClient) -> None:
        for key in (b"job:1", b"job:2", b"job", b"jo", b"other"):
            await store.put(KV_TABLE, key, b"v")
        assert await store.delete_prefix(KV_TABLE, b"job") == 3
        assert await store.keys(KV_TABLE) == [b"jo", b"other"]
        assert await store.delete_prefix(KV_TABLE, b"nothing") == 0

    @contract_test
    async def test_delete_prefix_empty_deletes_all(self, store: StoreClient) -> None:
        for key in (b"a", b"\x00", b"\xff", LONG):
            await store.put(KV_TABLE, key, b"v")
        await store.put(JOB_TABLE, b"a", b"v")
        assert await store.delete_prefix(KV_TABLE, b"") == 4
        assert await store.keys(KV_TABLE) == []
        assert await store.keys(JOB_TABLE) == [b"a"]

    @contract_test
    async def test_delete_prefix_long(self, store: StoreClient) -> None:
        keys = [LONG + b"a1", LONG + b"a2", LONG + b"b", LONG[:400], LONG[:450]]
        for key in keys:
            await store.put(KV_TABLE, key, b"v")
        assert await store.delete_prefix(KV_TABLE, LONG + b"a") == 2
        assert await store.keys(KV_TABLE) == sorted([LONG + b"b", LONG[:400], LONG[:450]])
        assert await store.delete_prefix(KV_TABLE, LONG[:420]) == 2
        assert await store.keys(KV_TABLE) == [LONG[:400]]

    # -- keys / prefix scans -----------------------------------------------------------

    @contract_test
    async def test_keys_in_byte_order(self, store: StoreClient) -> None:
        keys = [b"b", b"a", b"ab", b"a\x00", b"B", b"\x7f", b"\x80"]
        for key in keys:
            await store.put(KV_TABLE, key, b"v")
        assert await store.keys(KV_TABLE) == sorted(keys)
        assert await store.keys(KV_TABLE, b"a") == [b"a", b"a\x00", b"ab"]
        assert await store.keys(KV_TABLE, b"c") == []

    @contract_test
    async def test_long_keys_round_trip_and_order(self, store: StoreClient) -> None:
        # Long keys sharing their first 400+ bytes, a key of exactly 400 bytes, keys just
        # around LMDB's limit, and the maximum: order is the byte order of the full keys.
        keys = [
            LONG + b"\x02",
            LONG + b"\x01" + b"z" * 100,
            LONG + b"\x01",
            LONG,
            LONG[:400],
            LONG[:401],
            LONG[:511],
            LONG[:512],
            LONG[:399] + b"\x00" * 200,
            b"M" * MAX_KEY_BYTES,
            b"M" * (MAX_KEY_BYTES - 1) + b"\x00",
        ]
        for i, key in enumerate(keys):
            assert await store.put(KV_TABLE, key, i.to_bytes(2, "big")) is True
        for i, key in enumerate(keys):
            assert await store.get(KV_TABLE, key) == i.to_bytes(2, "big")
            assert await store.exists(KV_TABLE, key)
        assert await store.keys(KV_TABLE) == sorted(keys)
        everything = await store.get_all(KV_TABLE)
        assert everything == {key: i.to_bytes(2, "big") for i, key in enumerate(keys)}
        assert await store.get(KV_TABLE, LONG + b"\x03") is None

    @contract_test
    async def test_long_key_overwrite_and_delete(self, store: StoreClient) -> None:
        assert await store.put(KV_TABLE, LONG, b"1") is True
        assert await store.put(KV_TABLE, LONG, b"2", overwrite=False) is False
        assert await store.get(KV_TABLE, LONG) == b"1"
        assert await store.put(KV_TABLE, LONG, b"3") is False
        assert await store.get(KV_TABLE, LONG) == b"3"
        assert await store.delete(KV_TABLE, LONG) is True
        assert not await store.exists(KV_TABLE, LONG)

    @contract_test
    async def test_prefix_scan_with_long_prefix(self, store: StoreClient) -> None:
        keys = [LONG + b"a", LONG + b"ab", LONG + b"b", LONG[:450], LONG[:400], b"L"]
        for key in keys:
            await store.put(KV_TABLE, key, b"v")
        assert await store.keys(KV_TABLE, LONG + b"a") == [LONG + b"a", LONG + b"ab"]
        assert await store.keys(KV_TABLE, LONG[:420]) == sorted(
            [LONG + b"a", LONG + b"ab", LONG + b"b", LONG[:450]]
        )
        assert await store.keys(KV_TABLE, LONG[:400]) == sorted(keys[:5])
        assert await store.keys(KV_TABLE, LONG[:300]) == sorted(keys[:5])
        assert await store.keys(KV_TABLE, LONG + b"c") == []

    # -- job counter -------------------------------------------------------------------

    @contract_test
    async def test_next_job_id_counts_from_one(self, store: StoreClient) -> None:
        assert [await store.next_job_id() for _ in range(5)] == [1, 2, 3, 4, 5]
        assert len(await store.get_all(JOB_COUNTER_TABLE)) == 1

    @contract_test
    async def test_next_job_id_concurrent_calls_are_distinct(self, store: StoreClient) -> None:
        ids = await asyncio.gather(*(store.next_job_id() for _ in range(20)))
        assert sorted(ids) == list(range(1, 21))

    @contract_test
    async def test_concurrent_puts_all_land(self, store: StoreClient) -> None:
        added = await asyncio.gather(
            *(store.put(KV_TABLE, b"k%03d" % i, b"v%d" % i) for i in range(50))
        )
        assert all(added)
        assert await store.keys(KV_TABLE) == [b"k%03d" % i for i in range(50)]

    # -- refused requests --------------------------------------------------------------

    @contract_test
    async def test_unknown_table_is_refused(self, store: StoreClient) -> None:
        calls: list[Awaitable[object]] = [
            store.put("NOPE", b"k", b"v"),
            store.get("NOPE", b"k"),
            store.get_all("NOPE"),
            store.multi_get("NOPE", [b"k"]),
            store.delete("NOPE", b"k"),
            store.batch_delete("NOPE", [b"k"]),
            store.delete_prefix("NOPE", b""),
            store.keys("NOPE"),
            store.exists("NOPE", b"k"),
        ]
        for call in calls:
            with pytest.raises(InvalidRequestError):
                await call

    @contract_test
    async def test_oversized_key_is_refused(self, store: StoreClient) -> None:
        key = b"k" * (MAX_KEY_BYTES + 1)
        calls: list[Awaitable[object]] = [
            store.put(KV_TABLE, key, b"v"),
            store.get(KV_TABLE, key),
            store.multi_get(KV_TABLE, [b"ok", key]),
            store.delete(KV_TABLE, key),
            store.batch_delete(KV_TABLE, [key]),
            store.exists(KV_TABLE, key),
            store.keys(KV_TABLE, key),
            store.delete_prefix(KV_TABLE, key),
        ]
        for call in calls:
            with pytest.raises(InvalidRequestError):
                await call

    @contract_test
    async def test_empty_key_is_refused(self, store: StoreClient) -> None:
        with pytest.raises(InvalidRequestError):
            await store.put(KV_TABLE, b"", b"v")
        with pytest.raises(InvalidRequestError):
            await store.get(KV_TABLE, b"")

    @contract_test
    async def test_oversized_value_is_refused(self, store: StoreClient) -> None:
        with pytest.raises(InvalidRequestError):
            await store.put(KV_TABLE, b"k", b"\x00" * (MAX_VALUE_BYTES + 1))
        assert await store.get(KV_TABLE, b"k") is None

    @contract_test
    async def test_refused_write_does_not_disturb_concurrent_ones(self, store: StoreClient) -> None:
        results = await asyncio.gather(
            store.put(KV_TABLE, b"a", b"1"),
            store.put("NOPE", b"b", b"2"),
            store.put(KV_TABLE, b"c", b"3"),
            return_exceptions=True,
        )
        assert results[0] is True and results[2] is True
        assert isinstance(results[1], InvalidRequestError)
        assert await store.keys(KV_TABLE) == [b"a", b"c"]

    # -- durability (durable backends only) --------------------------------------------

    def test_data_survives_reopen(self, tmp_path: Path) -> None:
        if not self.durable:
            pytest.skip("backend is not durable")

        async def write() -> None:
            async with self.open_store(tmp_path) as store:
                await store.put(KV_TABLE, b"k", b"v")
                await store.put(KV_TABLE, LONG, b"long")
                await store.next_job_id()

        async def read() -> None:
            async with self.open_store(tmp_path) as store:
                assert await store.get_all(KV_TABLE) == {b"k": b"v", LONG: b"long"}
                assert await store.next_job_id() == 2

        asyncio.run(write())
        asyncio.run(read())
