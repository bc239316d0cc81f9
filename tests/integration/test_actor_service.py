"""ActorInfoGcsService over a real grpc.aio server on loopback, called with our generated
stubs in the order a Ray driver uses (ray-gcs-contract.md section 2), scheduling on
raylet and worker stand-ins (gcs_ha.testing.actor_fakes); and creations in flight when
the leader dies, finished by the next leader of a real 3-replica in-process Raft cluster,
with the real node manager greeting the raylets (ReleaseUnusedActorWorkers).

Ports: 17600-17999 (this file).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio

from gcs_ha.managers.actors.manager import ActorDeps, ActorManager
from gcs_ha.managers.function_manager import FunctionManager
from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.node_manager import NodeManager
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.managers.runtime_env_manager import RuntimeEnvManager
from gcs_ha.managers.worker_manager import WorkerManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.proto.ray.common_pb2 import JobConfig
from gcs_ha.proto.ray.gcs_pb2 import ActorTableData, JobTableData
from gcs_ha.proto.ray.node_manager_pb2 import RequestWorkerLeaseReply
from gcs_ha.server.clients.core_workers import GrpcCoreWorkerClientPool
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.server.services.actor_service import mount
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import StoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.actor_fakes import (
    EXCLUSIVE_PORT,
    JOB,
    FakeWorker,
    RecordingPublisher,
    actor_id,
    bind,
    creation_spec,
    node_id,
)
from gcs_ha.testing.fake_raylet import FakeRaylet, node_info
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs
from gcs_ha.testing.polling import until

GCS_PORT = 17600
RAFT_PORT, REPLICA_GCS_PORT = 17650, 17660
_ports = itertools.count(17700)
RAY_OK, RAY_INVALID, RAY_NOT_FOUND, RAY_ALREADY_EXISTS = 0, 4, 17, 20
ALIVE, DEAD = ActorTableData.ALIVE, ActorTableData.DEAD
OWNER_NODE = node_id(9)
Stub = pb_grpc.ActorInfoGcsServiceStub


@dataclass
class Gcs:
    """The managers actors need, wired as gcs_ha.server.assembly wires them."""

    tables: GcsTableStorage
    pool: GrpcRayletClientPool
    core_workers: GrpcCoreWorkerClientPool
    nodes: NodeManager
    resources: ResourceManager
    functions: FunctionManager
    runtime_envs: RuntimeEnvManager
    workers: WorkerManager
    actors: ActorManager

    @classmethod
    def over(cls, store: StoreClient) -> Gcs:
        tables = GcsTableStorage(store)
        publisher = RecordingPublisher()
        pool = GrpcRayletClientPool()
        core_workers = GrpcCoreWorkerClientPool()
        nodes = NodeManager(tables, publisher, pool, HealthCheckManager(pool, 60.0))
        resources = ResourceManager(None)
        functions = FunctionManager(tables.internal_kv)
        runtime_envs = RuntimeEnvManager(tables.internal_kv, restart_pin_s=0)
        workers = WorkerManager(tables, publisher)
        deps = ActorDeps(
            tables, publisher, nodes, resources, pool, core_workers, functions, runtime_envs
        )
        options = {"lease_retry_s": 0.05, "create_retry_s": 0.05}
        actors = ActorManager(deps, scheduler_options=options)
        nodes.add_node_added_listener(resources.on_node_added)
        nodes.add_node_removed_listener(resources.on_node_dead)
        nodes.set_in_use_providers(workers=actors.workers_in_use)
        nodes.add_node_added_listener(actors.on_node_added)
        nodes.add_node_removed_listener(actors.on_node_dead)
        workers.add_worker_dead_listener(actors.on_worker_dead)
        return cls(tables, pool, core_workers, nodes, resources, functions, runtime_envs,
                   workers, actors)  # fmt: skip

    def order(self) -> list[Any]:
        return [self.pool, self.core_workers, self.nodes, self.resources, self.functions,
                self.runtime_envs, self.workers, self.actors]  # fmt: skip

    async def start(self) -> None:
        init = await GcsInitData.load(self.tables)
        for manager in self.order():
            await manager.start(init)
        await self.nodes.on_leader_started()  # greets the raylets, as after serving

    async def stop(self) -> None:
        for manager in reversed(self.order()):
            await manager.stop()

    async def raylet(self, n: int) -> FakeRaylet:
        raylet = await FakeRaylet(node_info(node_id(n)), ports=_ports).start()
        await self.nodes.register_node(raylet.node)
        return raylet


@asynccontextmanager
async def serving(gcs: Gcs, port: int) -> AsyncIterator[Stub]:
    await gcs.start()
    server = grpc.aio.server(options=EXCLUSIVE_PORT)
    mount(server, gcs.actors)
    port = bind(server, iter(range(port, port + 10)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Stub(channel)  # type: ignore[no-untyped-call]
    finally:
        await server.stop(None)
        await gcs.stop()


async def owner() -> FakeWorker:
    return await FakeWorker(OWNER_NODE, _ports, worker_id=b"o" * 28).start()


async def add_job(tables: GcsTableStorage) -> None:
    await tables.job_table.put(JOB, JobTableData(job_id=JOB, config=JobConfig()))


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


# -- the service --------------------------------------------------------------------------


def test_a_driver_registers_creates_looks_up_lists_and_kills_actors() -> None:
    async def body() -> None:
        gcs = Gcs.over(InMemoryStoreClient())
        await add_job(gcs.tables)
        driver = await owner()
        raylet = await gcs.raylet(1)
        try:
            async with serving(gcs, GCS_PORT) as stub:
                await driver_flow(stub, raylet, driver, gcs)
        finally:
            await raylet.stop()
            await driver.stop()

    run(body)


async def driver_flow(stub: Stub, raylet: FakeRaylet, driver: FakeWorker, gcs: Gcs) -> None:
    spec = creation_spec(1, owner=driver.address, name="counter", detached=True)
    # a named actor: the driver checks the name first (NotFound expected)
    named = await stub.GetNamedActorInfo(
        pb.GetNamedActorInfoRequest(name="counter", ray_namespace="ns")
    )
    assert named.status.code == RAY_NOT_FOUND
    assert named.status.message == "Actor with name 'counter' was not found."
    registered = await stub.RegisterActor(pb.RegisterActorRequest(task_spec=spec))
    assert registered.status.code == RAY_OK and registered.HasField("status")
    again = await stub.RegisterActor(pb.RegisterActorRequest(task_spec=spec))  # a replay
    assert again.status.code == RAY_OK
    info = await stub.GetActorInfo(pb.GetActorInfoRequest(actor_id=actor_id(1)))
    assert info.actor_table_data.state == ActorTableData.DEPENDENCIES_UNREADY
    created = await stub.CreateActor(pb.CreateActorRequest(task_spec=spec))
    [worker] = raylet.workers.values()
    assert created.status.code == RAY_OK and created.actor_address == worker.address
    named = await stub.GetNamedActorInfo(
        pb.GetNamedActorInfoRequest(name="counter", ray_namespace="ns")
    )
    assert (
        named.actor_table_data.state == ALIVE
        and named.task_spec.actor_creation_task_spec.name == "counter"
    )
    taken = await stub.RegisterActor(
        pb.RegisterActorRequest(task_spec=creation_spec(2, owner=driver.address, name="counter"))
    )
    assert taken.status.code == RAY_ALREADY_EXISTS
    # an owned actor too
    owned = creation_spec(3, owner=driver.address)
    await stub.RegisterActor(pb.RegisterActorRequest(task_spec=owned))
    created3 = await stub.CreateActor(pb.CreateActorRequest(task_spec=owned))
    assert created3.status.code == RAY_OK
    listed = await stub.ListNamedActors(pb.ListNamedActorsRequest(all_namespaces=True))
    assert [(n.ray_namespace, n.name) for n in listed.named_actors_list] == [("ns", "counter")]
    everything = await stub.GetAllActorInfo(pb.GetAllActorInfoRequest())
    assert everything.total == 2 and len(everything.actor_table_data) == 2
    limited = await stub.GetAllActorInfo(pb.GetAllActorInfoRequest(limit=1))
    assert len(limited.actor_table_data) == 1 and limited.total == 2
    filtered = await stub.GetAllActorInfo(
        pb.GetAllActorInfoRequest(filters=pb.GetAllActorInfoRequest.Filters(actor_id=actor_id(3)))
    )
    assert [a.actor_id for a in filtered.actor_table_data] == [actor_id(3)]
    assert filtered.num_filtered == 1
    # ray.kill(no_restart=True)
    killed = await stub.KillActorViaGcs(
        pb.KillActorViaGcsRequest(actor_id=actor_id(1), force_kill=True, no_restart=True)
    )
    assert killed.status.code == RAY_OK
    info = await stub.GetActorInfo(pb.GetActorInfoRequest(actor_id=actor_id(1)))
    assert info.actor_table_data.state == DEAD
    await until(lambda: raylet.record.kills)
    late = await stub.CreateActor(pb.CreateActorRequest(task_spec=spec))
    assert late.status.code == RAY_INVALID
    unknown = await stub.KillActorViaGcs(pb.KillActorViaGcsRequest(actor_id=actor_id(7)))
    assert unknown.status.code == RAY_NOT_FOUND
    # the owner drops its handles
    scope = await stub.ReportActorOutOfScope(pb.ReportActorOutOfScopeRequest(actor_id=actor_id(3)))
    assert scope.status.code == RAY_OK
    info = await stub.GetActorInfo(pb.GetActorInfoRequest(actor_id=actor_id(3)))
    assert info.actor_table_data.state == DEAD
    dead_restart = await stub.RestartActorForLineageReconstruction(
        pb.RestartActorForLineageReconstructionRequest(
            actor_id=actor_id(3), num_restarts_due_to_lineage_reconstruction=1
        )
    )
    assert dead_restart.status.code == RAY_INVALID  # max_restarts 0: permanently dead
    assert gcs.actors.num_alive() == 0


def test_create_actor_answers_cancelled_with_the_death_cause() -> None:
    async def body() -> None:
        gcs = Gcs.over(InMemoryStoreClient())
        await add_job(gcs.tables)
        driver = await owner()
        raylet = await gcs.raylet(1)
        kind = RequestWorkerLeaseReply.SCHEDULING_CANCELLED_PLACEMENT_GROUP_REMOVED
        raylet.policies.append(RequestWorkerLeaseReply(canceled=True, failure_type=kind))
        try:
            async with serving(gcs, GCS_PORT + 1) as stub:
                spec = creation_spec(1, owner=driver.address)
                await stub.RegisterActor(pb.RegisterActorRequest(task_spec=spec))
                reply = await stub.CreateActor(pb.CreateActorRequest(task_spec=spec))
                assert reply.status.code == 19  # SchedulingCancelled
                assert "placement group was removed" in (
                    reply.death_cause.actor_unschedulable_context.error_message
                )
        finally:
            await raylet.stop()
            await driver.stop()

    run(body)


# -- failover -----------------------------------------------------------------------------


def test_a_new_leader_finishes_creations_in_flight_exactly_once(tmp_path: Path) -> None:
    """Actor 1 (named, detached) is ALIVE; actor 2's lease is queued at the raylet and
    actor 3 has a leased, stored worker whose constructor is running when the leader
    dies. The next leader cancels the queued lease before releasing unused workers,
    keeps actor 3's worker, and finishes both creations when the driver replays
    CreateActor: every actor ALIVE, each constructor pushed once."""

    async def body() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT, REPLICA_GCS_PORT)
        driver = await owner()
        raylet: FakeRaylet | None = None
        async with InProcessCluster(configs) as cluster:
            leader = await cluster.leader()
            old = Gcs.over(leader.store)
            await add_job(old.tables)
            async with serving(old, GCS_PORT + 2) as stub:
                raylet = await old.raylet(1)
                in_flight = await start_creations(stub, raylet, driver)
                survivor = raylet.record.leases[0]
            await cluster.stop(cluster.index_of(leader))  # the leader dies
            for call in in_flight:
                call.cancel()
            successor = await cluster.leader()
            new = Gcs.over(successor.store)
            async with serving(new, GCS_PORT + 3) as stub:
                await until(lambda: raylet is not None and raylet.record.releases)
                assert raylet.record.cancels, "the queued lease was not cancelled"
                released = raylet.record.releases[-1]
                assert actor_worker(raylet, 1) in released and actor_worker(raylet, 3) in released
                for held in raylet.workers.values():
                    if held.push_gate is not None:
                        held.push_gate.set()
                for n in (2, 3):  # the driver replays its CreateActor calls
                    spec = creation_spec(n, owner=driver.address)
                    reply = await stub.CreateActor(pb.CreateActorRequest(task_spec=spec))
                    assert reply.status.code == RAY_OK, reply.status
                for n in (1, 2, 3):
                    info = await stub.GetActorInfo(pb.GetActorInfoRequest(actor_id=actor_id(n)))
                    assert info.actor_table_data.state == ALIVE
                pushed = [
                    p.task_spec.actor_creation_task_spec.actor_id
                    for w in raylet.workers.values()
                    for p in w.pushes
                ]
                assert [pushed.count(actor_id(n)) for n in (1, 2, 3)] == [1, 1, 1]
                assert not any(w.crashed for w in raylet.workers.values())
                named = await stub.GetNamedActorInfo(
                    pb.GetNamedActorInfoRequest(name="survivor", ray_namespace="ns")
                )
                assert named.actor_table_data.address.worker_id == actor_worker(raylet, 1)
                assert survivor.lease_spec.actor_id == actor_id(1)
        if raylet is not None:
            await raylet.stop()
        await driver.stop()

    run(body)


async def start_creations(
    stub: Stub, raylet: FakeRaylet, driver: FakeWorker
) -> list[asyncio.Future[Any]]:
    """Actor 1 ALIVE; actor 2 leasing (held at the raylet); actor 3 constructing."""
    first = creation_spec(1, owner=driver.address, name="survivor", detached=True)
    await stub.RegisterActor(pb.RegisterActorRequest(task_spec=first))
    await stub.CreateActor(pb.CreateActorRequest(task_spec=first))
    raylet.policies.append("hold")
    calls: list[asyncio.Future[Any]] = []
    second = creation_spec(2, owner=driver.address)
    await stub.RegisterActor(pb.RegisterActorRequest(task_spec=second))
    calls.append(asyncio.ensure_future(stub.CreateActor(pb.CreateActorRequest(task_spec=second))))
    await until(lambda: raylet.held)
    original = raylet.grant

    async def grant(request: Any) -> RequestWorkerLeaseReply:
        reply = await original(request)
        raylet.workers[bytes(reply.worker_address.worker_id)].push_gate = asyncio.Event()
        raylet.grant = original  # type: ignore[method-assign]
        return reply

    raylet.grant = grant  # type: ignore[method-assign]
    third = creation_spec(3, owner=driver.address)
    await stub.RegisterActor(pb.RegisterActorRequest(task_spec=third))
    calls.append(asyncio.ensure_future(stub.CreateActor(pb.CreateActorRequest(task_spec=third))))
    await until(lambda: any(w.pushes for w in raylet.workers.values() if w.push_gate))
    return calls


def actor_worker(raylet: FakeRaylet, n: int) -> bytes:
    """The worker that received actor n's constructor."""
    for worker in raylet.workers.values():
        for push in worker.pushes:
            if push.task_spec.actor_creation_task_spec.actor_id == actor_id(n):
                return worker.worker_id
    raise AssertionError(f"actor {n} was never pushed")
