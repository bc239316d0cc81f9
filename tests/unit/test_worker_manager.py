"""WorkerManager over a real in-memory store, with a recording publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError, NotFoundError
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.worker_manager import WorkerManager
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import (
    DRIVER,
    INTENDED_USER_EXIT,
    SYSTEM_ERROR,
    USER_ERROR,
    Address,
)
from gcs_ha.proto.ray.gcs_pb2 import WorkerDeltaData, WorkerTableData
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage

NODE = b"n" * 28


class RecordingPublisher:
    """A Publisher that keeps what was published."""

    def __init__(self) -> None:
        self.messages: list[pubsub_pb2.PubMessage] = []

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        self.messages.append(message)


class Env:
    def __init__(self, max_dead: int = 100) -> None:
        self.tables = GcsTableStorage(InMemoryStoreClient())
        self.publisher = RecordingPublisher()
        self.dead: list[WorkerTableData] = []
        self.max_dead = max_dead
        self.workers = self.build()

    def build(self) -> WorkerManager:
        workers = WorkerManager(self.tables, self.publisher, max_dead_workers=self.max_dead)
        workers.add_worker_dead_listener(self.dead.append)
        return workers

    async def start(self) -> None:
        await self.workers.start(GcsInitData())
        await self.workers.wait_restored()

    async def restart(self) -> None:
        await self.workers.stop()
        self.workers = self.build()
        await self.start()


def run(body: Callable[[Env], Coroutine[Any, Any, None]], max_dead: int = 100) -> None:
    async def main() -> None:
        env = Env(max_dead)
        await env.start()
        await body(env)
        await env.workers.stop()

    asyncio.run(main())


def worker_id(n: int) -> bytes:
    return n.to_bytes(2, "big") * 14


def worker(n: int, **fields: Any) -> WorkerTableData:
    return WorkerTableData(
        is_alive=fields.pop("is_alive", True),
        worker_address=Address(
            node_id=NODE, ip_address="127.0.0.1", port=10000 + n, worker_id=worker_id(n)
        ),
        pid=100 + n,
        **fields,
    )


def failure(n: int, exit_type: Any = SYSTEM_ERROR, end_ms: int = 0) -> WorkerTableData:
    return WorkerTableData(
        worker_address=Address(node_id=NODE, worker_id=worker_id(n)),
        exit_type=exit_type,
        exit_detail=f"worker {n} exited",
        end_time_ms=end_ms,
    )


async def stored_ids(env: Env) -> set[bytes]:
    return set(await env.tables.worker_table.get_all())


def test_add_and_get_worker_info() -> None:
    async def body(env: Env) -> None:
        await env.workers.add_worker_info(worker(1, worker_type=DRIVER))
        got = await env.workers.get_worker_info(worker_id(1))
        assert got == worker(1, worker_type=DRIVER)
        assert await env.workers.get_worker_info(worker_id(2)) is None
        assert await env.workers.get_worker_info(b"") is None
        with pytest.raises(InvalidRequestError):
            await env.workers.add_worker_info(WorkerTableData(is_alive=True))

    run(body)


def test_report_worker_failure_merges_stores_publishes_and_notifies() -> None:
    async def body(env: Env) -> None:
        await env.workers.add_worker_info(worker(1))
        await env.workers.report_worker_failure(failure(1, USER_ERROR, end_ms=55))
        got = await env.workers.get_worker_info(worker_id(1))
        assert got is not None and not got.is_alive
        assert got.pid == 101 and got.worker_address.port == 10001  # kept from AddWorkerInfo
        assert got.exit_type == USER_ERROR and got.exit_detail == "worker 1 exited"
        assert got.end_time_ms == 55
        [message] = env.publisher.messages
        assert message.channel_type == pubsub_pb2.GCS_WORKER_DELTA_CHANNEL
        assert message.key_id == worker_id(1)
        assert message.worker_delta_message == WorkerDeltaData(worker_id=worker_id(1), node_id=NODE)
        assert env.dead == [got]

    run(body)


def test_failure_of_an_unknown_worker_is_recorded_too() -> None:
    async def body(env: Env) -> None:
        await env.workers.report_worker_failure(failure(7))
        got = await env.workers.get_worker_info(worker_id(7))
        assert got is not None and not got.is_alive and got.exit_detail == "worker 7 exited"

    run(body)


def test_replayed_failure_republishes_and_renotifies_but_queues_the_worker_once() -> None:
    async def body(env: Env) -> None:
        await env.workers.add_worker_info(worker(1))
        await env.workers.report_worker_failure(failure(1))
        first = await env.workers.get_worker_info(worker_id(1))
        await env.workers.report_worker_failure(failure(1))
        assert await env.workers.get_worker_info(worker_id(1)) == first
        assert len(env.publisher.messages) == 2 and len(env.dead) == 2
        assert env.workers.num_dead_workers() == 1

    run(body)


def test_a_late_add_worker_info_does_not_revive_a_dead_worker() -> None:
    async def body(env: Env) -> None:
        await env.workers.report_worker_failure(failure(1))
        await env.workers.add_worker_info(worker(1))
        got = await env.workers.get_worker_info(worker_id(1))
        assert got is not None and not got.is_alive

    run(body)


def test_get_all_worker_info_filters_limits_and_counts() -> None:
    async def body(env: Env) -> None:
        for n in range(1, 6):
            await env.workers.add_worker_info(worker(n))
        await env.workers.report_worker_failure(failure(2))
        await env.workers.update_num_paused_threads(worker_id(3), 2)
        page = await env.workers.get_all_worker_info()
        assert page.total == 5 and len(page.workers) == 5 and page.num_filtered == 0
        alive = await env.workers.get_all_worker_info(is_alive=True)
        assert {w.worker_address.worker_id for w in alive.workers} == {
            worker_id(n) for n in (1, 3, 4, 5)
        }
        assert alive.num_filtered == 1 and alive.total == 5
        paused = await env.workers.get_all_worker_info(exist_paused_threads=True)
        assert [w.worker_address.worker_id for w in paused.workers] == [worker_id(3)]
        limited = await env.workers.get_all_worker_info(limit=2)
        assert len(limited.workers) == 2 and limited.total == 5
        assert (await env.workers.get_all_worker_info(limit=0)).workers == []

    run(body)


def test_debugger_port_and_paused_threads_updates() -> None:
    async def body(env: Env) -> None:
        await env.workers.add_worker_info(worker(1))
        await env.workers.update_debugger_port(worker_id(1), 5678)
        await env.workers.update_num_paused_threads(worker_id(1), 3)
        await env.workers.update_num_paused_threads(worker_id(1), -1)
        got = await env.workers.get_worker_info(worker_id(1))
        assert got is not None
        assert got.debugger_port == 5678 and got.num_paused_threads == 2
        await env.workers.update_num_paused_threads(worker_id(1), -5)  # never negative
        got = await env.workers.get_worker_info(worker_id(1))
        assert got is not None and got.num_paused_threads == 0
        with pytest.raises(NotFoundError):
            await env.workers.update_debugger_port(worker_id(9), 1)
        with pytest.raises(NotFoundError):
            await env.workers.update_num_paused_threads(worker_id(9), 1)

    run(body)


def test_concurrent_updates_of_one_worker_are_not_lost() -> None:
    async def body(env: Env) -> None:
        await env.workers.add_worker_info(worker(1))
        await asyncio.gather(
            *(env.workers.update_num_paused_threads(worker_id(1), 1) for _ in range(20))
        )
        got = await env.workers.get_worker_info(worker_id(1))
        assert got is not None and got.num_paused_threads == 20

    run(body)


def test_dead_workers_over_the_cap_are_evicted_intended_exits_first() -> None:
    async def body(env: Env) -> None:
        for n in range(1, 5):
            await env.workers.add_worker_info(worker(n))
        await env.workers.report_worker_failure(failure(1, SYSTEM_ERROR))
        await env.workers.report_worker_failure(failure(2, INTENDED_USER_EXIT))
        await env.workers.report_worker_failure(failure(3, USER_ERROR))
        assert await stored_ids(env) == {worker_id(n) for n in (1, 3, 4)}  # 2 went first
        await env.workers.report_worker_failure(failure(4, USER_ERROR))
        assert await stored_ids(env) == {worker_id(n) for n in (3, 4)}  # then the oldest failure
        assert env.workers.num_dead_workers() == 2

    run(body, max_dead=2)


def test_a_restart_rebuilds_the_queue_and_trims_it_keeping_the_newest_deaths() -> None:
    async def body(env: Env) -> None:
        for n in range(1, 6):  # written directly: the cap was larger on the old leader
            dead = worker(n, is_alive=False, exit_type=USER_ERROR, end_time_ms=100 - n)
            await env.tables.worker_table.put(worker_id(n), dead)
        await env.tables.worker_table.put(worker_id(9), worker(9))
        await env.restart()
        # Worker 5 died first (end 95), worker 1 last (end 99); the 3 newest stay.
        assert await stored_ids(env) == {worker_id(n) for n in (1, 2, 3, 9)}
        assert env.workers.num_dead_workers() == 3

    run(body, max_dead=3)
