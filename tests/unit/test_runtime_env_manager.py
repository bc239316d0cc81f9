"""RuntimeEnvManager over a real in-memory KV: references, pins with expiry, deletion of
unreferenced gcs:// packages, and the pins a new leader takes on what the tables name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager, protocol_of, uris_of
from gcs_ha.proto.ray.common_pb2 import JobConfig, TaskSpec
from gcs_ha.proto.ray.gcs_pb2 import JobTableData
from gcs_ha.proto.ray.runtime_env_pb2 import RuntimeEnvInfo, RuntimeEnvUris
from gcs_ha.storage.internal_kv import InternalKv
from gcs_ha.storage.memory import InMemoryStoreClient

PKG_A, PKG_B = "gcs://_ray_pkg_a.zip", "gcs://_ray_pkg_b.zip"
S3 = "s3://bucket/pkg.zip"


def info(working_dir: str = "", *py_modules: str) -> RuntimeEnvInfo:
    return RuntimeEnvInfo(
        uris=RuntimeEnvUris(working_dir_uri=working_dir, py_modules_uris=py_modules)
    )


def run(body: Callable[[InternalKv], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        kv = InternalKv(InMemoryStoreClient())
        for uri in (PKG_A, PKG_B, S3):
            await kv.put(b"", uri.encode(), b"zip")
        await body(kv)

    asyncio.run(main())


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 5.0) -> None:
    """Wait until `check()` holds (background deletions), failing after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def started(kv: InternalKv, init: GcsInitData | None = None, **kw: Any) -> RuntimeEnvManager:
    manager = RuntimeEnvManager(kv, **kw)
    await manager.start(init or GcsInitData())
    return manager


def test_uris_of_a_runtime_env_and_their_protocol() -> None:
    assert uris_of(info(PKG_A, PKG_B, "")) == [PKG_A, PKG_B]
    assert uris_of(info()) == []
    assert protocol_of(PKG_A) == "gcs" and protocol_of(S3) == "s3" and protocol_of("x") is None


def test_a_package_is_deleted_when_its_last_holder_goes() -> None:
    async def body(kv: InternalKv) -> None:
        manager = await started(kv)
        manager.add_uri_reference("job-1", info(PKG_A, PKG_B))
        manager.add_uri_reference("actor-1", info(PKG_A))
        manager.remove_uri_reference("job-1")
        await eventually(lambda: _absent(kv, PKG_B))
        assert await kv.exists(b"", PKG_A.encode())
        assert manager.reference_count(PKG_A) == 1
        manager.remove_uri_reference("actor-1")
        await eventually(lambda: _absent(kv, PKG_A))
        await manager.stop()

    run(body)


def test_adding_a_holder_again_replaces_its_uris_without_double_counting() -> None:
    async def body(kv: InternalKv) -> None:
        manager = await started(kv)
        manager.add_uri_reference("job-1", info(PKG_A))
        manager.add_uri_reference("job-1", info(PKG_A))
        assert manager.reference_count(PKG_A) == 1
        manager.add_uri_reference("job-1", info(PKG_B))  # PKG_A no longer referenced
        await eventually(lambda: _absent(kv, PKG_A))
        assert manager.references_of("job-1") == [PKG_B]
        await manager.stop()

    run(body)


def test_only_gcs_packages_are_deleted() -> None:
    async def body(kv: InternalKv) -> None:
        manager = await started(kv)
        manager.add_uri_reference("job-1", info(S3, PKG_A))
        manager.remove_uri_reference("job-1")
        await eventually(lambda: _absent(kv, PKG_A))
        assert await kv.exists(b"", S3.encode())
        await manager.stop()

    run(body)


def test_a_pin_keeps_a_package_until_it_expires() -> None:
    async def body(kv: InternalKv) -> None:
        manager = await started(kv)
        manager.pin_uri(PKG_A, 3600)
        manager.add_uri_reference("job-1", info(PKG_A))
        manager.remove_uri_reference("job-1")
        await asyncio.sleep(0.05)
        assert await kv.exists(b"", PKG_A.encode())  # still pinned
        manager.pin_uri(PKG_B, 0)  # expires at once
        await eventually(lambda: _absent(kv, PKG_B))
        assert manager.reference_count(PKG_A) == 1
        await manager.stop()  # drops the pin without deleting anything
        assert await kv.exists(b"", PKG_A.encode())

    run(body)


def test_pin_rejects_bad_requests() -> None:
    async def body(kv: InternalKv) -> None:
        manager = await started(kv)
        with pytest.raises(InvalidRequestError):
            manager.pin_uri("", 10)
        with pytest.raises(InvalidRequestError):
            manager.pin_uri(PKG_A, -1)
        await manager.stop()

    run(body)


def test_a_new_leader_pins_what_the_tables_name_for_a_while() -> None:
    async def body(kv: InternalKv) -> None:
        job = JobTableData(job_id=b"\x01\x00\x00\x00", is_dead=True)
        job.config.CopyFrom(JobConfig(runtime_env_info=info(PKG_A)))
        spec = TaskSpec(runtime_env_info=info("", PKG_B))
        init = GcsInitData(jobs={job.job_id: job}, actor_task_specs={b"actor": spec})
        manager = await started(kv, init, restart_pin_s=3600)
        assert manager.reference_count(PKG_A) == manager.reference_count(PKG_B) == 1
        # A holder released during the grace period deletes nothing.
        manager.add_uri_reference("actor-hex", info("", PKG_B))
        manager.remove_uri_reference("actor-hex")
        await asyncio.sleep(0.05)
        assert await kv.exists(b"", PKG_B.encode())
        await manager.stop()
        # With a short grace, the finished job's leftover package is collected.
        short = await started(kv, init, restart_pin_s=0.01)
        await eventually(lambda: _absent(kv, PKG_A))
        await short.stop()

    run(body)


async def _absent(kv: InternalKv, uri: str) -> bool:
    return not await kv.exists(b"", uri.encode())
