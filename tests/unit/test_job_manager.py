"""JobManager (with the real FunctionManager and RuntimeEnvManager) over a real in-memory
store. The publisher records what was published; the driver probe stands in for the
drivers' core workers (the real gRPC probe is exercised in the integration test)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gcs_ha.errors import InvalidRequestError, UnavailableError
from gcs_ha.managers.function_manager import FUN_NAMESPACE, FunctionManager
from gcs_ha.managers.job_manager import JobManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import Address, JobConfig
from gcs_ha.proto.ray.gcs_pb2 import JobTableData
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.tables import GcsTableStorage

NODE_A, NODE_B = b"a" * 28, b"b" * 28


class RecordingPublisher:
    """A Publisher that keeps what was published."""

    def __init__(self) -> None:
        self.messages: list[pubsub_pb2.PubMessage] = []

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        self.messages.append(message)

    def jobs(self) -> list[JobTableData]:
        return [
            m.job_message for m in self.messages if m.channel_type == pubsub_pb2.GCS_JOB_CHANNEL
        ]


class FixedProbe:
    """Answers NumPendingTasks for drivers by port; other ports are unreachable."""

    def __init__(self, pending_by_port: dict[int, int]) -> None:
        self.pending_by_port = pending_by_port
        self.asked: list[int] = []

    async def num_pending_tasks(self, driver: Address, timeout_s: float) -> int:
        self.asked.append(driver.port)
        if driver.port not in self.pending_by_port:
            raise UnavailableError(f"no driver at port {driver.port}")
        return self.pending_by_port[driver.port]


class Env:
    """A job manager and its collaborators over one in-memory store."""

    def __init__(self, probe: FixedProbe | None = None) -> None:
        self.tables = GcsTableStorage(InMemoryStoreClient())
        self.publisher = RecordingPublisher()
        self.clock = itertools.count(1_000)
        self.probe = probe
        self.finished: list[JobTableData] = []
        self.functions, self.runtime_envs, self.jobs = self.build()

    def build(self) -> tuple[FunctionManager, RuntimeEnvManager, JobManager]:
        functions = FunctionManager(self.tables.internal_kv)
        runtime_envs = RuntimeEnvManager(self.tables.internal_kv, restart_pin_s=0)
        jobs = JobManager(
            self.tables,
            self.publisher,
            functions,
            runtime_envs,
            driver_probe=self.probe,
            clock=lambda: next(self.clock),
        )
        jobs.add_job_finished_listener(self.finished.append)
        return functions, runtime_envs, jobs

    async def start(self) -> None:
        init = await GcsInitData.load(self.tables)
        for manager in (self.functions, self.runtime_envs, self.jobs):
            await manager.start(init)

    async def restart(self) -> GcsInitData:
        """A new leader: fresh managers started from the tables."""
        for manager in (self.jobs, self.runtime_envs, self.functions):
            await manager.stop()
        self.functions, self.runtime_envs, self.jobs = self.build()
        init = await GcsInitData.load(self.tables)
        for manager in (self.functions, self.runtime_envs, self.jobs):
            await manager.start(init)
        return init

    async def export(self, job: int, *names: bytes) -> None:
        kv = self.tables.internal_kv
        for name in names:
            await kv.put(FUN_NAMESPACE, name + b":" + job_hex(job) + b":hash", b"code")

    async def fun_keys(self) -> list[bytes]:
        return await self.tables.internal_kv.keys(FUN_NAMESPACE, b"")


def run(body: Callable[[Env], Coroutine[Any, Any, None]], probe: FixedProbe | None = None) -> None:
    async def main() -> None:
        env = Env(probe)
        await env.start()
        await body(env)

    asyncio.run(main())


def job_id(n: int) -> bytes:
    return n.to_bytes(4, "little")


def job_hex(n: int) -> bytes:
    return job_id(n).hex().encode()


def job_data(n: int, node: bytes = NODE_A, port: int = 7000, **config: Any) -> JobTableData:
    return JobTableData(
        job_id=job_id(n),
        driver_pid=4000 + n,
        driver_ip_address="127.0.0.1",
        driver_address=Address(
            node_id=node, ip_address="127.0.0.1", port=port, worker_id=b"w" * 28
        ),
        config=JobConfig(ray_namespace="ns", **config),
        entrypoint="python job.py",
    )


# -- ids and registration ------------------------------------------------------------------


def test_next_job_id_counts_from_one() -> None:
    async def body(env: Env) -> None:
        assert [await env.jobs.next_job_id() for _ in range(3)] == [1, 2, 3]

    run(body)


def test_add_job_stores_it_alive_with_the_leaders_start_time_and_publishes_it() -> None:
    async def body(env: Env) -> None:
        request = job_data(1)
        request.is_dead, request.start_time = True, 5  # the leader decides these
        await env.jobs.add_job(request)
        stored = await env.tables.job_table.get(job_id(1))
        assert stored is not None
        assert not stored.is_dead
        assert stored.start_time == stored.timestamp == 1000
        assert stored.driver_pid == 4001 and stored.entrypoint == "python job.py"
        [message] = env.publisher.messages
        assert message.channel_type == pubsub_pb2.GCS_JOB_CHANNEL
        assert message.key_id == job_id(1)
        assert message.job_message == stored
        assert env.functions.is_referenced(job_id(1))

    run(body)


def test_add_job_replayed_keeps_the_first_record_and_publishes_it_again() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        first = await env.tables.job_table.get(job_id(1))
        await env.jobs.add_job(job_data(1))
        assert await env.tables.job_table.get(job_id(1)) == first
        assert env.publisher.jobs() == [first, first]
        # One driver reference, not two: finishing the job once releases the code.
        await env.export(1, b"RemoteFunction")
        await env.jobs.mark_job_finished(job_id(1))
        assert await env.fun_keys() == []

    run(body)


def test_add_job_rejects_a_malformed_job_id() -> None:
    async def body(env: Env) -> None:
        bad = job_data(1)
        bad.job_id = b"\x01\x00"
        with pytest.raises(InvalidRequestError):
            await env.jobs.add_job(bad)
        with pytest.raises(InvalidRequestError):
            await env.jobs.mark_job_finished(b"")
        assert env.publisher.messages == []

    run(body)


# -- finishing -----------------------------------------------------------------------------


def test_mark_job_finished_stores_publishes_notifies_and_removes_the_jobs_code() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        await env.jobs.add_job(job_data(2))
        await env.export(1, b"RemoteFunction", b"ActorClass", b"FunctionsToRun")
        await env.export(2, b"RemoteFunction")
        await env.tables.internal_kv.put(b"other", b"RemoteFunction:" + job_hex(1) + b":x", b"v")
        await env.jobs.mark_job_finished(job_id(1))
        stored = await env.tables.job_table.get(job_id(1))
        assert stored is not None and stored.is_dead
        assert stored.end_time == stored.timestamp == 1002 and stored.start_time == 1000
        assert env.publisher.jobs()[-1] == stored
        assert env.finished == [stored]
        assert await env.fun_keys() == [b"RemoteFunction:" + job_hex(2) + b":hash"]
        assert await env.tables.internal_kv.exists(
            b"other", b"RemoteFunction:" + job_hex(1) + b":x"
        )

    run(body)


def test_mark_job_finished_replayed_keeps_the_end_time_and_notifies_again() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        await env.jobs.mark_job_finished(job_id(1))
        first = await env.tables.job_table.get(job_id(1))
        await env.jobs.mark_job_finished(job_id(1))
        assert await env.tables.job_table.get(job_id(1)) == first
        assert env.finished == [first, first]
        assert env.publisher.jobs()[-2:] == [first, first]
        # A replayed AddJob of a finished job does not bring it back.
        await env.jobs.add_job(job_data(1))
        assert await env.tables.job_table.get(job_id(1)) == first

    run(body)


def test_mark_job_finished_of_an_unknown_job_is_ignored() -> None:
    async def body(env: Env) -> None:
        await env.jobs.mark_job_finished(job_id(9))
        assert env.publisher.messages == [] and env.finished == []
        assert await env.tables.job_table.get(job_id(9)) is None

    run(body)


def test_a_detached_actor_keeps_the_code_of_its_finished_job() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        await env.export(1, b"ActorClass")
        actor = b"actor-1"
        env.functions.add_job_reference(job_id(1), actor)
        await env.jobs.mark_job_finished(job_id(1))
        assert len(await env.fun_keys()) == 1
        assert await env.functions.remove_job_reference(job_id(1), actor)
        assert await env.fun_keys() == []

    run(body)


def test_on_node_removed_finishes_the_jobs_whose_driver_ran_there() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1, node=NODE_A))
        await env.jobs.add_job(job_data(2, node=NODE_B))
        await env.jobs.add_job(job_data(3, node=NODE_A))
        await env.jobs.on_node_removed(NODE_A)
        dead = {j.job_id for j in await env.jobs.get_all_job_info() if j.is_dead}
        assert dead == {job_id(1), job_id(3)}
        assert {j.job_id for j in env.finished} == {job_id(1), job_id(3)}

    run(body)


# -- GetAllJobInfo ---------------------------------------------------------------------------


def test_get_all_job_info_orders_by_job_number_and_applies_limit_and_id_filters() -> None:
    async def body(env: Env) -> None:
        for n in (258, 2, 1):  # 258 = 0x102: its first byte is the smallest
            await env.jobs.add_job(job_data(n))
        sub = job_data(3, metadata={"job_submission_id": "raysubmit_abc"})
        await env.jobs.add_job(sub)
        ids = [j.job_id for j in await env.jobs.get_all_job_info(skip_is_running_tasks=True)]
        assert ids == [job_id(1), job_id(2), job_id(3), job_id(258)]
        limited = await env.jobs.get_all_job_info(limit=2, skip_is_running_tasks=True)
        assert [j.job_id for j in limited] == [job_id(1), job_id(2)]
        assert await env.jobs.get_all_job_info(limit=0) == []
        by_hex = await env.jobs.get_all_job_info(job_or_submission_id=job_id(2).hex())
        assert [j.job_id for j in by_hex] == [job_id(2)]
        by_sub = await env.jobs.get_all_job_info(job_or_submission_id="raysubmit_abc")
        assert [j.job_id for j in by_sub] == [job_id(3)]
        assert await env.jobs.get_all_job_info(job_or_submission_id="nope") == []
        with pytest.raises(InvalidRequestError):
            await env.jobs.get_all_job_info(limit=-1)

    run(body)


def test_get_all_job_info_fills_job_api_info_from_the_kv_unless_skipped() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1, metadata={"job_submission_id": "raysubmit_x"}))
        await env.jobs.add_job(job_data(2, metadata={"job_submission_id": "raysubmit_bad"}))
        await env.jobs.add_job(job_data(3))
        info = {
            "status": "RUNNING",
            "entrypoint": "python x.py",
            "start_time": 17,
            "message": None,
            "metadata": {"k": "v"},
            "some_new_field": 1,
        }
        kv = env.tables.internal_kv
        await kv.put(b"job", b"_ray_internal_job_info_raysubmit_x", json.dumps(info).encode())
        await kv.put(b"job", b"_ray_internal_job_info_raysubmit_bad", b"{not json")
        jobs = await env.jobs.get_all_job_info(skip_is_running_tasks=True)
        assert jobs[0].HasField("job_info")
        assert jobs[0].job_info.status == "RUNNING" and jobs[0].job_info.start_time == 17
        assert dict(jobs[0].job_info.metadata) == {"k": "v"}
        assert not jobs[1].HasField("job_info") and not jobs[2].HasField("job_info")
        skipped = await env.jobs.get_all_job_info(
            skip_is_running_tasks=True, skip_submission_job_info=True
        )
        assert not skipped[0].HasField("job_info")
        stored = await env.tables.job_table.get(job_id(1))
        assert stored is not None and not stored.HasField("job_info")  # replies are copies

    run(body)


def test_is_running_tasks_asks_live_drivers_and_is_unset_when_they_cannot_answer() -> None:
    probe = FixedProbe({7001: 3, 7002: 0})

    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1, port=7001))
        await env.jobs.add_job(job_data(2, port=7002))
        await env.jobs.add_job(job_data(3, port=7003))  # unreachable
        await env.jobs.add_job(job_data(4, port=7001))
        await env.jobs.mark_job_finished(job_id(4))
        jobs = await env.jobs.get_all_job_info()
        assert [j.is_running_tasks for j in jobs[:2]] == [True, False]
        assert not jobs[2].HasField("is_running_tasks")
        assert jobs[3].HasField("is_running_tasks") and not jobs[3].is_running_tasks
        assert sorted(probe.asked) == [7001, 7002, 7003]  # never the finished job's driver
        probe.asked.clear()
        skipped = await env.jobs.get_all_job_info(skip_is_running_tasks=True)
        assert probe.asked == [] and not any(j.HasField("is_running_tasks") for j in skipped)

    run(body, probe)


def test_without_a_probe_live_jobs_have_is_running_tasks_unset() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        [job] = await env.jobs.get_all_job_info()
        assert not job.HasField("is_running_tasks")

    run(body)


# -- a new leader --------------------------------------------------------------------------


def test_a_new_leader_serves_the_jobs_and_keeps_live_jobs_code_referenced() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        await env.jobs.add_job(job_data(2))
        await env.export(1, b"RemoteFunction")
        await env.restart()
        assert [j.job_id for j in await env.jobs.get_all_job_info()] == [job_id(1), job_id(2)]
        await env.jobs.mark_job_finished(job_id(1))
        assert await env.fun_keys() == []
        assert env.functions.is_referenced(job_id(2))

    run(body)


def test_collect_garbage_removes_code_left_by_a_job_finished_on_a_failed_leader() -> None:
    async def body(env: Env) -> None:
        await env.jobs.add_job(job_data(1))
        await env.jobs.add_job(job_data(2))
        await env.export(1, b"RemoteFunction", b"ActorClass")
        await env.export(2, b"RemoteFunction")
        # The old leader committed job 1's end but died before deleting its code.
        finished = await env.tables.job_table.get(job_id(1))
        assert finished is not None
        finished.is_dead = True
        await env.tables.job_table.put(job_id(1), finished)
        init = await env.restart()
        await env.jobs.collect_garbage(init)
        assert await env.fun_keys() == [b"RemoteFunction:" + job_hex(2) + b":hash"]

    run(body)


def test_a_jobs_runtime_env_package_is_deleted_when_the_job_finishes() -> None:
    async def body(env: Env) -> None:
        kv = env.tables.internal_kv
        uri = "gcs://_ray_pkg_abc.zip"
        await kv.put(b"", uri.encode(), b"zip")
        data = job_data(1)
        data.config.runtime_env_info.uris.working_dir_uri = uri
        await env.jobs.add_job(data)
        await env.jobs.add_job(data)  # replay: still one reference
        assert env.runtime_envs.reference_count(uri) == 1
        await env.jobs.mark_job_finished(job_id(1))
        for _ in range(100):
            if not await kv.exists(b"", uri.encode()):
                break
            await asyncio.sleep(0.01)
        assert not await kv.exists(b"", uri.encode())

    run(body)
