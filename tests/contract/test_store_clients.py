"""The StoreClient contract run against every backend of gcs_ha.storage.

Adding a backend: a subclass of StoreClientContract with `open_store` (and `durable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from gcs_ha.storage import InMemoryStoreClient, LmdbStoreClient, StoreClient
from tests.contract.store_contract import StoreClientContract


class TestInMemoryStoreClient(StoreClientContract):
    @contextlib.asynccontextmanager
    async def open_store(self, tmp_path: Path) -> AsyncIterator[StoreClient]:
        yield InMemoryStoreClient()


class TestLmdbStoreClient(StoreClientContract):
    durable = True

    @contextlib.asynccontextmanager
    async def open_store(self, tmp_path: Path) -> AsyncIterator[StoreClient]:
        store = LmdbStoreClient.open(tmp_path / "lmdb", map_size=1 << 30)
        try:
            yield store
        finally:
            await store.close()
