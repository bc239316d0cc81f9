"""The StoreClient contract run against every backend of gcs_ha.storage.

Adding a backend: a subclass of StoreClientContract with `open_store` (and `durable`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from gcs_ha.storage import InMemoryStoreClient, LmdbStoreClient, StoreClient
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs
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


class TestReplicatedStoreClientOneReplica(StoreClientContract):
    """A single replica: Raft with no peers, the full write path (journal, group commit)."""

    durable = True

    @contextlib.asynccontextmanager
    async def open_store(self, tmp_path: Path) -> AsyncIterator[StoreClient]:
        async with InProcessCluster(replica_configs(tmp_path, 1, 25400, 25410)) as cluster:
            yield (await cluster.leader()).store


class TestReplicatedStoreClientThreeReplicas(StoreClientContract):
    """Three replicas in one process: every write is committed by a majority."""

    durable = True

    @contextlib.asynccontextmanager
    async def open_store(self, tmp_path: Path) -> AsyncIterator[StoreClient]:
        configs = replica_configs(tmp_path, 3, 25420, 25430, secret=b"contract-secret")
        async with InProcessCluster(configs) as cluster:
            yield (await cluster.leader()).store
