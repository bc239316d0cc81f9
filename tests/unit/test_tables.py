"""Typed tables (GcsTable, GcsTableWithJobId), Ray's internal KV and GcsTableStorage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.errors import CorruptDataError, InvalidRequestError
from gcs_ha.proto.admin_pb2 import Member
from gcs_ha.proto.ray.common_pb2 import TaskSpec
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData, GcsNodeInfo, JobTableData, WorkerTableData
from gcs_ha.storage.internal_kv import InternalKv, extract_key, make_key
from gcs_ha.storage.lmdb_store import LmdbStoreClient
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import (
    ACTOR_TABLE,
    ACTOR_TASK_SPEC_TABLE,
    JOB_TABLE,
    KV_TABLE,
    MEMBERS_TABLE,
    NODE_TABLE,
    WORKERS_TABLE,
)
from gcs_ha.storage.tables import GcsTable, GcsTableStorage, GcsTableWithJobId

JOB1, JOB2 = b"\x01\x00\x00\x00", b"\x02\x00\x00\x00"


def actor_id(n: int, job: bytes) -> bytes:
    """An ActorID: 12 unique bytes, then the 4-byte job id."""
    return n.to_bytes(12, "big") + job


def run(body: Callable[[InMemoryStoreClient], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body(InMemoryStoreClient()))


def member(node_id: str) -> Member:
    return Member(node_id=node_id, raft_address=f"{node_id}:1", gcs_address=f"{node_id}:2")


# -- GcsTable --------------------------------------------------------------------------


def test_gcs_table_round_trip() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        table = GcsTable[bytes, Member](store, MEMBERS_TABLE, Member)
        assert await table.get(b"r1") is None
        await table.put(b"r1", member("r1"))
        await table.put(b"r2", member("r2"))
        await table.put(b"r2", member("r2bis"))
        assert await table.get(b"r1") == member("r1")
        assert await table.get_all() == {b"r1": member("r1"), b"r2": member("r2bis")}
        assert await table.multi_get([b"r2", b"r9"]) == {b"r2": member("r2bis")}
        assert await store.get(MEMBERS_TABLE, b"r1") == member("r1").SerializeToString()
        assert await table.delete(b"r1") is True
        assert await table.delete(b"r1") is False
        assert await table.batch_delete([b"r1", b"r2"]) == 1
        assert await table.get_all() == {}

    run(body)


def test_gcs_table_damaged_value_raises_corrupt() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        table = GcsTable[bytes, Member](store, MEMBERS_TABLE, Member)
        await store.put(MEMBERS_TABLE, b"bad", b"\x0a\x05ab")  # field 1 claims 5 bytes, has 2
        with pytest.raises(CorruptDataError, match="Member"):
            await table.get(b"bad")
        with pytest.raises(CorruptDataError):
            await table.get_all()

    run(body)


# -- GcsTableWithJobId -----------------------------------------------------------------


def new_actor_table(
    store: InMemoryStoreClient | LmdbStoreClient,
) -> GcsTableWithJobId[bytes, Member]:
    return GcsTableWithJobId[bytes, Member](store, ACTOR_TABLE, Member)


def test_job_id_is_the_last_four_bytes() -> None:
    assert GcsTableWithJobId.job_id_of(actor_id(7, JOB2)) == JOB2
    with pytest.raises(InvalidRequestError):
        GcsTableWithJobId.job_id_of(b"abc")


def test_get_and_delete_by_job_id() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        table = new_actor_table(store)
        for n in range(3):
            await table.put(actor_id(n, JOB1), member(f"a{n}"))
        await table.put(actor_id(9, JOB2), member("b9"))
        assert await table.get_by_job_id(JOB1) == {
            actor_id(n, JOB1): member(f"a{n}") for n in range(3)
        }
        await table.delete(actor_id(0, JOB1))
        assert set(await table.get_by_job_id(JOB1)) == {actor_id(1, JOB1), actor_id(2, JOB1)}
        assert await table.delete_by_job_id(JOB1) == 2
        assert await table.get_by_job_id(JOB1) == {}
        assert table.keys_of_job(JOB1) == set()
        assert await table.delete_by_job_id(JOB1) == 0
        assert await table.get_by_job_id(JOB2) == {actor_id(9, JOB2): member("b9")}
        assert await store.keys(ACTOR_TABLE) == [actor_id(9, JOB2)]

    run(body)


def test_load_rebuilds_the_index_from_the_store() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        writer = new_actor_table(store)
        await writer.put(actor_id(1, JOB1), member("a1"))
        await writer.put(actor_id(2, JOB2), member("a2"))
        await writer.batch_delete([actor_id(2, JOB2)])

        reader = new_actor_table(store)  # a new leader: empty index until load()
        assert await reader.get_by_job_id(JOB1) == {}
        assert await reader.load() == {actor_id(1, JOB1): member("a1")}
        assert await reader.get_by_job_id(JOB1) == {actor_id(1, JOB1): member("a1")}
        assert reader.keys_of_job(JOB2) == set()

    run(body)


def test_index_never_misses_a_key_under_concurrent_delete_and_put(tmp_path: Path) -> None:
    async def body() -> None:
        store = LmdbStoreClient.open(tmp_path / "lmdb", map_size=1 << 28)
        try:
            table = new_actor_table(store)
            key = actor_id(1, JOB1)
            await table.put(key, member("old"))
            # The delete is queued first and completes first; the put lands after it.
            await asyncio.gather(table.delete(key), table.put(key, member("new")))
            assert await table.get_by_job_id(JOB1) == {key: member("new")}
        finally:
            await store.close()

    asyncio.run(body())


# -- internal KV -----------------------------------------------------------------------


def test_internal_kv_key_encoding() -> None:
    assert make_key(b"fun", b"k") == b"@namespace_fun:k"
    assert make_key(b"", b"k") == b"k"
    assert extract_key(b"@namespace_fun:k:x") == b"k:x"
    assert extract_key(b"plain:key") == b"plain:key"


def test_internal_kv_namespaces() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        kv = InternalKv(store)
        assert await kv.put(b"session", b"session_name", b"s1", overwrite=False) is True
        assert await kv.put(b"session", b"session_name", b"s2", overwrite=False) is False
        assert await kv.put(b"", b"gcs_pid", b"77") is True
        assert await kv.put(b"other", b"session_name", b"o") is True
        assert await kv.get(b"session", b"session_name") == b"s1"
        assert await kv.get(b"other", b"session_name") == b"o"
        assert await kv.get(b"session", b"gcs_pid") is None
        assert await store.get(KV_TABLE, b"@namespace_session:session_name") == b"s1"
        assert await store.get(KV_TABLE, b"gcs_pid") == b"77"
        assert await kv.exists(b"", b"gcs_pid")
        assert not await kv.exists(b"session", b"gcs_pid")
        got = await kv.multi_get(b"session", [b"session_name", b"missing"])
        assert got == {b"session_name": b"s1"}

    run(body)


def test_internal_kv_keys_and_delete_by_prefix() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        kv = InternalKv(store)
        for key in (b"RemoteFunction:01:a", b"RemoteFunction:01:b", b"ActorClass:01:c"):
            await kv.put(b"fun", key, b"pickled")
        await kv.put(b"fun2", b"RemoteFunction:01:z", b"other namespace")
        await kv.put(b"", b"__autoscaling_status", b"{}")
        assert await kv.keys(b"fun", b"RemoteFunction:01:") == [
            b"RemoteFunction:01:a",
            b"RemoteFunction:01:b",
        ]
        # The empty namespace lists every namespace's keys, stripped, as Ray's GCS does.
        assert sorted(await kv.keys(b"", b"")) == sorted(
            [
                b"RemoteFunction:01:a",
                b"RemoteFunction:01:b",
                b"ActorClass:01:c",
                b"RemoteFunction:01:z",
                b"__autoscaling_status",
            ]
        )
        assert await kv.delete(b"fun", b"RemoteFunction:01:a") == 1
        assert await kv.delete(b"fun", b"RemoteFunction:01:a") == 0
        assert await kv.delete(b"fun", b"", del_by_prefix=True) == 2
        assert await kv.keys(b"fun") == []
        assert await kv.keys(b"fun2") == [b"RemoteFunction:01:z"]

    run(body)


# -- GcsTableStorage -------------------------------------------------------------------


def test_table_storage_uses_rays_tables_and_types() -> None:
    async def body(store: InMemoryStoreClient) -> None:
        tables = GcsTableStorage(store)
        job = JobTableData(job_id=JOB1, driver_pid=42, is_dead=False)
        await tables.job_table.put(JOB1, job)
        aid = actor_id(5, JOB1)
        await tables.actor_table.put(aid, ActorTableData(actor_id=aid, job_id=JOB1, name="x"))
        await tables.actor_task_spec_table.put(aid, TaskSpec(job_id=JOB1, name="ctor"))
        node_id = b"\x11" * 28
        await tables.node_table.put(node_id, GcsNodeInfo(node_id=node_id, node_name="n"))
        worker_id = b"\x22" * 28
        await tables.worker_table.put(worker_id, WorkerTableData(pid=9, job_id=JOB1))

        assert await tables.job_table.get(JOB1) == job
        assert await store.keys(JOB_TABLE) == [JOB1]
        assert await store.keys(ACTOR_TABLE) == [aid]
        assert await store.keys(ACTOR_TASK_SPEC_TABLE) == [aid]
        assert await store.keys(NODE_TABLE) == [node_id]
        assert await store.keys(WORKERS_TABLE) == [worker_id]
        actors = await tables.actor_table.get_by_job_id(JOB1)
        assert actors[aid].name == "x"
        specs = await tables.actor_task_spec_table.get_by_job_id(JOB1)
        assert specs[aid].name == "ctor"
        await tables.internal_kv.put(b"cluster", b"ray_cluster_id", b"\x00" * 28)
        assert await tables.internal_kv.get(b"cluster", b"ray_cluster_id") == b"\x00" * 28
        assert [await tables.next_job_id() for _ in range(3)] == [1, 2, 3]

    run(body)
