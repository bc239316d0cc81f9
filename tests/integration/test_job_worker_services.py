"""Job, worker, task, runtime env and event export services over real grpc.aio servers on
loopback, called with our generated Ray stubs in the orders Ray's processes use
(ray-gcs-contract.md sections 2-3). The managers run over a real in-memory store, or over
a real 3-replica Raft cluster for the failover case. A real CoreWorkerService server
stands in for the driver that NumPendingTasks reaches; a recording publisher stands in
for the pubsub manager.

Ports: 14000-14999 (this file).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from gcs_ha.managers.event_export_manager import EventExportManager
from gcs_ha.managers.function_manager import FUN_NAMESPACE, FunctionManager
from gcs_ha.managers.job_manager import JobManager
from gcs_ha.managers.manager import GcsInitData, Manager
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.managers.task_manager import TaskManager
from gcs_ha.managers.worker_manager import WorkerManager
from gcs_ha.proto.ray import common_pb2, core_worker_pb2, core_worker_pb2_grpc, pubsub_pb2
from gcs_ha.proto.ray import events_pb2 as ev
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.proto.ray.common_pb2 import Address, JobConfig, TaskInfoEntry
from gcs_ha.proto.ray.gcs_pb2 import (
    JobTableData,
    TaskEventData,
    TaskEvents,
    TaskStateUpdate,
    WorkerTableData,
)
from gcs_ha.server.clients.core_workers import CoreWorkerDriverProbe
from gcs_ha.server.services import (
    event_export_service,
    job_service,
    runtime_env_service,
    task_service,
    worker_service,
)
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import StoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs

_ports = itertools.count(14000)  # gRPC servers; the Raft cluster uses 14500-14502
RAFT_PORT, UNUSED_GCS_PORT = 14500, 14510
RAY_OK, RAY_NOT_FOUND, RAY_INVALID_ARGUMENT = 0, 17, 34
NODE = b"n" * 28
JOB1 = b"\x01\x00\x00\x00"


class RecordingPublisher:
    """A Publisher that keeps what was published."""

    def __init__(self) -> None:
        self.messages: list[pubsub_pb2.PubMessage] = []

    def on(self, channel: int) -> list[pubsub_pb2.PubMessage]:
        return [m for m in self.messages if m.channel_type == channel]

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        self.messages.append(message)


class FakeDriver(core_worker_pb2_grpc.CoreWorkerServiceServicer):
    """A driver's core worker that answers NumPendingTasks."""

    def __init__(self, pending: int) -> None:
        self.pending = pending
        self.calls = 0

    async def NumPendingTasks(
        self, request: core_worker_pb2.NumPendingTasksRequest, context: Any
    ) -> core_worker_pb2.NumPendingTasksReply:
        self.calls += 1
        return core_worker_pb2.NumPendingTasksReply(num_pending_tasks=self.pending)


@dataclass
class Gcs:
    """The managers of this file, wired as the GcsServer wires them, behind one server."""

    tables: GcsTableStorage
    publisher: RecordingPublisher = field(default_factory=RecordingPublisher)

    def __post_init__(self) -> None:
        kv = self.tables.internal_kv
        self.functions = FunctionManager(kv)
        self.runtime_envs = RuntimeEnvManager(kv)
        self.tasks = TaskManager(job_done_delay_s=0, worker_dead_delay_s=0)
        self.jobs = JobManager(
            self.tables,
            self.publisher,
            self.functions,
            self.runtime_envs,
            driver_probe=CoreWorkerDriverProbe(),
        )
        self.workers = WorkerManager(self.tables, self.publisher)
        self.events = EventExportManager(self.tasks)
        self.jobs.add_job_finished_listener(self.tasks.on_job_finished)
        self.workers.add_worker_dead_listener(self.tasks.on_worker_dead)
        # Dependency order: start in this order, stop in reverse.
        self.order: list[Manager] = [
            self.functions,
            self.runtime_envs,
            self.tasks,
            self.jobs,
            self.workers,
            self.events,
        ]

    def mount(self, server: grpc.aio.Server) -> None:
        job_service.mount(server, self.jobs)
        worker_service.mount(server, self.workers)
        task_service.mount(server, self.tasks)
        runtime_env_service.mount(server, self.runtime_envs)
        event_export_service.mount(server, self.events)

    async def start(self) -> None:
        init = await GcsInitData.load(self.tables)
        for manager in self.order:
            await manager.start(init)
        await self.workers.wait_restored()
        await self.jobs.collect_garbage(init)  # the after-serving hook

    async def stop(self) -> None:
        for manager in reversed(self.order):
            await manager.stop()


@dataclass
class Client:
    jobs: pb_grpc.JobInfoGcsServiceStub
    workers: pb_grpc.WorkerInfoGcsServiceStub
    tasks: pb_grpc.TaskInfoGcsServiceStub
    runtime_envs: pb_grpc.RuntimeEnvGcsServiceStub
    events: pb_grpc.RayEventExportGcsServiceStub


@contextlib.asynccontextmanager
async def serving(store: StoreClient) -> AsyncIterator[tuple[Gcs, Client]]:
    gcs = Gcs(GcsTableStorage(store))
    await gcs.start()
    server = grpc.aio.server()
    gcs.mount(server)
    address = f"127.0.0.1:{next(_ports)}"
    server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    client = Client(
        pb_grpc.JobInfoGcsServiceStub(channel),  # type: ignore[no-untyped-call]
        pb_grpc.WorkerInfoGcsServiceStub(channel),  # type: ignore[no-untyped-call]
        pb_grpc.TaskInfoGcsServiceStub(channel),  # type: ignore[no-untyped-call]
        pb_grpc.RuntimeEnvGcsServiceStub(channel),  # type: ignore[no-untyped-call]
        pb_grpc.RayEventExportGcsServiceStub(channel),  # type: ignore[no-untyped-call]
    )
    try:
        yield gcs, client
    finally:
        await channel.close(None)
        await server.stop(None)
        await gcs.stop()


@contextlib.asynccontextmanager
async def fake_driver(pending: int) -> AsyncIterator[tuple[FakeDriver, int]]:
    driver = FakeDriver(pending)
    server = grpc.aio.server()
    core_worker_pb2_grpc.add_CoreWorkerServiceServicer_to_server(driver, server)  # type: ignore[no-untyped-call]
    port = next(_ports)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield driver, port
    finally:
        await server.stop(None)


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def job_data(job_id: bytes, driver_port: int) -> JobTableData:
    return JobTableData(
        job_id=job_id,
        driver_pid=4242,
        driver_ip_address="127.0.0.1",
        driver_address=Address(
            node_id=NODE, ip_address="127.0.0.1", port=driver_port, worker_id=b"d" * 28
        ),
        config=JobConfig(ray_namespace="anon"),
        entrypoint="python driver.py",
    )


def worker_data(n: int) -> WorkerTableData:
    return WorkerTableData(
        is_alive=True,
        worker_address=Address(
            node_id=NODE, ip_address="127.0.0.1", port=20000 + n, worker_id=bytes([n]) * 28
        ),
        worker_type=common_pb2.WORKER,
        pid=500 + n,
    )


async def fun_keys(gcs: Gcs) -> list[bytes]:
    return await gcs.tables.internal_kv.keys(FUN_NAMESPACE, b"")


def test_a_driver_lifecycle_as_ray_runs_it() -> None:
    async def body() -> None:
        async with (
            fake_driver(pending=2) as (driver, port),
            serving(InMemoryStoreClient()) as (
                gcs,
                client,
            ),
        ):
            # ray.init: a job id; the raylet adds the job; the driver exports a function.
            next_id = await client.jobs.GetNextJobID(pb.GetNextJobIDRequest())
            assert next_id.status.code == RAY_OK and next_id.job_id == 1
            job_id = next_id.job_id.to_bytes(4, "little")
            reply = await client.jobs.AddJob(pb.AddJobRequest(data=job_data(job_id, port)))
            assert reply.status.code == RAY_OK
            [published] = gcs.publisher.on(pubsub_pb2.GCS_JOB_CHANNEL)
            assert published.key_id == job_id and not published.job_message.is_dead
            await gcs.tables.internal_kv.put(
                FUN_NAMESPACE, b"RemoteFunction:" + job_id.hex().encode() + b":f1", b"pickled"
            )
            # The driver and a worker register; the worker reports task events.
            for n in (1, 2):
                added = await client.workers.AddWorkerInfo(
                    pb.AddWorkerInfoRequest(worker_data=worker_data(n))
                )
                assert added.status.code == RAY_OK
            events = TaskEvents(
                task_id=b"t" * 20 + job_id,
                job_id=job_id,
                task_info=TaskInfoEntry(name="f", job_id=job_id, type=common_pb2.NORMAL_TASK),
                state_updates=_running_on(bytes([2]) * 28),
            )
            await client.tasks.AddTaskEventData(
                pb.AddTaskEventDataRequest(data=TaskEventData(events_by_task=[events]))
            )

            # A raylet at startup skips both expensive fields; the dashboard does not.
            raylet_view = await client.jobs.GetAllJobInfo(
                pb.GetAllJobInfoRequest(
                    skip_submission_job_info_field=True, skip_is_running_tasks_field=True
                )
            )
            [job] = raylet_view.job_info_list
            assert not job.HasField("is_running_tasks") and driver.calls == 0
            dashboard_view = await client.jobs.GetAllJobInfo(pb.GetAllJobInfoRequest())
            assert dashboard_view.job_info_list[0].is_running_tasks is True
            assert driver.calls == 1

            # The worker dies; its raylet reports it.
            failure = WorkerTableData(
                worker_address=worker_data(2).worker_address,
                exit_type=common_pb2.SYSTEM_ERROR,
                exit_detail="killed",
            )
            reported = await client.workers.ReportWorkerFailure(
                pb.ReportWorkerFailureRequest(worker_failure=failure)
            )
            assert reported.status.code == RAY_OK
            [delta] = gcs.publisher.on(pubsub_pb2.GCS_WORKER_DELTA_CHANNEL)
            assert delta.worker_delta_message.worker_id == bytes([2]) * 28
            assert delta.worker_delta_message.node_id == NODE
            info = await client.workers.GetWorkerInfo(
                pb.GetWorkerInfoRequest(worker_id=b"\x02" * 28)
            )
            assert not info.worker_table_data.is_alive and info.worker_table_data.pid == 502
            alive = await client.workers.GetAllWorkerInfo(
                pb.GetAllWorkerInfoRequest(
                    filters=pb.GetAllWorkerInfoRequest.Filters(is_alive=True)
                )
            )
            assert alive.total == 2 and alive.num_filtered == 1
            assert [w.pid for w in alive.worker_table_data] == [501]

            # The driver exits: the raylet finishes the job; its code goes.
            finished = await client.jobs.MarkJobFinished(pb.MarkJobFinishedRequest(job_id=job_id))
            assert finished.status.code == RAY_OK
            assert gcs.publisher.on(pubsub_pb2.GCS_JOB_CHANNEL)[-1].job_message.is_dead
            assert await fun_keys(gcs) == []
            after = await client.jobs.GetAllJobInfo(pb.GetAllJobInfoRequest())
            assert after.job_info_list[0].is_dead
            assert after.job_info_list[0].HasField("is_running_tasks")
            assert not after.job_info_list[0].is_running_tasks
            assert driver.calls == 1  # a finished job's driver is not asked

            # The task the dead worker ran is failed (listeners, no delay here).
            tasks = await _wait_for_state(client, "FAILED")
            assert tasks.events_by_task[0].task_info.name == "f"

    run(body)


def test_domain_errors_travel_in_the_reply_status() -> None:
    async def body() -> None:
        async with serving(InMemoryStoreClient()) as (_, client):
            bad_job = await client.jobs.AddJob(pb.AddJobRequest(data=JobTableData(job_id=b"\x01")))
            assert bad_job.status.code == RAY_INVALID_ARGUMENT
            bad_limit = await client.jobs.GetAllJobInfo(pb.GetAllJobInfoRequest(limit=-1))
            assert bad_limit.status.code == RAY_INVALID_ARGUMENT
            unknown = await client.jobs.MarkJobFinished(pb.MarkJobFinishedRequest(job_id=JOB1))
            assert unknown.status.code == RAY_OK  # as Ray: logged, answered OK
            port = await client.workers.UpdateWorkerDebuggerPort(
                pb.UpdateWorkerDebuggerPortRequest(worker_id=b"x" * 28, debugger_port=1)
            )
            assert port.status.code == RAY_NOT_FOUND
            missing = await client.workers.GetWorkerInfo(
                pb.GetWorkerInfoRequest(worker_id=b"x" * 28)
            )
            assert missing.status.code == RAY_OK and not missing.HasField("worker_table_data")
            no_id = await client.workers.AddWorkerInfo(pb.AddWorkerInfoRequest())
            assert no_id.status.code == RAY_INVALID_ARGUMENT
            bad_filter = pb.GetTaskEventsRequest.Filters(
                state_filters=[pb.GetTaskEventsRequest.Filters.StateFilter(predicate=5)]  # type: ignore[arg-type]
            )
            tasks = await client.tasks.GetTaskEvents(pb.GetTaskEventsRequest(filters=bad_filter))
            assert tasks.status.code == RAY_INVALID_ARGUMENT
            pin = await client.runtime_envs.PinRuntimeEnvURI(
                pb.PinRuntimeEnvURIRequest(uri="gcs://p.zip", expiration_s=-1)
            )
            assert pin.status.code == RAY_INVALID_ARGUMENT

    run(body)


def test_pins_events_and_paused_threads_over_the_wire() -> None:
    async def body() -> None:
        async with serving(InMemoryStoreClient()) as (gcs, client):
            pin = await client.runtime_envs.PinRuntimeEnvURI(
                pb.PinRuntimeEnvURIRequest(uri="gcs://_ray_pkg_x.zip", expiration_s=600)
            )
            assert pin.status.code == RAY_OK
            assert gcs.runtime_envs.reference_count("gcs://_ray_pkg_x.zip") == 1

            lifecycle = ev.TaskLifecycleEvent(
                task_id=b"t" * 20 + JOB1,
                job_id=JOB1,
                state_transitions=[
                    ev.TaskLifecycleEvent.StateTransition(state=common_pb2.FINISHED)
                ],
            )
            definition = ev.TaskDefinitionEvent(
                task_id=b"t" * 20 + JOB1, job_id=JOB1, task_name="g"
            )
            added = await client.events.AddEvents(
                ev.AddEventsRequest(
                    events_data=ev.RayEventsData(
                        events=[
                            ev.RayEvent(
                                event_type=ev.RayEvent.TASK_DEFINITION_EVENT,
                                task_definition_event=definition,
                            ),
                            ev.RayEvent(
                                event_type=ev.RayEvent.TASK_LIFECYCLE_EVENT,
                                task_lifecycle_event=lifecycle,
                            ),
                        ]
                    )
                )
            )
            assert added.status.code == RAY_OK
            finished = await _wait_for_state(client, "FINISHED")
            assert finished.events_by_task[0].task_info.name == "g"

            await client.workers.AddWorkerInfo(pb.AddWorkerInfoRequest(worker_data=worker_data(3)))
            update = await client.workers.UpdateWorkerNumPausedThreads(
                pb.UpdateWorkerNumPausedThreadsRequest(
                    worker_id=b"\x03" * 28, num_paused_threads_delta=2
                )
            )
            assert update.status.code == RAY_OK
            paused = await client.workers.GetAllWorkerInfo(
                pb.GetAllWorkerInfoRequest(
                    filters=pb.GetAllWorkerInfoRequest.Filters(exist_paused_threads=True)
                )
            )
            assert [w.num_paused_threads for w in paused.worker_table_data] == [2]

    run(body)


def test_a_new_leader_finishes_a_job_added_on_the_old_one(tmp_path: Path) -> None:
    async def body() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT, UNUSED_GCS_PORT)
        async with InProcessCluster(configs) as cluster:
            leader = await cluster.leader()
            async with serving(leader.store) as (_, client):
                await client.jobs.AddJob(pb.AddJobRequest(data=job_data(JOB1, 1)))
                await client.workers.AddWorkerInfo(
                    pb.AddWorkerInfoRequest(worker_data=worker_data(1))
                )
                store = GcsTableStorage(leader.store)
                await store.internal_kv.put(FUN_NAMESPACE, b"ActorClass:01000000:a", b"c")
            await cluster.stop(cluster.index_of(leader))
            new_leader = await cluster.leader()
            async with serving(new_leader.store) as (gcs, client):
                # The raylet replays MarkJobFinished against the new leader.
                reply = await client.jobs.MarkJobFinished(pb.MarkJobFinishedRequest(job_id=JOB1))
                assert reply.status.code == RAY_OK
                [job] = (await client.jobs.GetAllJobInfo(pb.GetAllJobInfoRequest())).job_info_list
                assert job.is_dead and job.start_time > 0 and job.end_time >= job.start_time
                assert await fun_keys(gcs) == []
                info = await client.workers.GetWorkerInfo(
                    pb.GetWorkerInfoRequest(worker_id=b"\x01" * 28)
                )
                assert info.worker_table_data.is_alive

    run(body)


def _running_on(worker_id: bytes) -> TaskStateUpdate:
    return TaskStateUpdate(state_ts_ns={common_pb2.RUNNING: 1}, worker_id=worker_id)


async def _wait_for_state(
    client: Client, state: str, timeout: float = 5.0
) -> pb.GetTaskEventsReply:
    """GetTaskEvents until an attempt is in `state` (listeners run in the background)."""
    only = pb.GetTaskEventsRequest.Filters(
        state_filters=[pb.GetTaskEventsRequest.Filters.StateFilter(state=state)]
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        reply: pb.GetTaskEventsReply = await client.tasks.GetTaskEvents(
            pb.GetTaskEventsRequest(filters=only)
        )
        assert reply.status.code == RAY_OK
        if reply.events_by_task:
            return reply
        assert loop.time() < deadline, f"no task reached {state}"
        await asyncio.sleep(0.01)
