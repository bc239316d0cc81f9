"""PlacementGroupInfoGcsService over a real grpc.aio server on loopback, called with our
generated stubs, scheduling on raylet stand-ins (real NodeManagerService servers); and a
placement in flight when the leader dies, finished by the next leader of a real
3-replica in-process Raft cluster, with the real node manager greeting the raylets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc.aio

from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.node_manager import NodeManager
from gcs_ha.managers.placement_groups.manager import PlacementGroupManager
from gcs_ha.managers.placement_groups.scheduler import PlacementGroupScheduler
from gcs_ha.managers.resource_manager import ResourceManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import PACK, STRICT_SPREAD, JobConfig, PlacementGroupSpec
from gcs_ha.proto.ray.gcs_pb2 import JobTableData, PlacementGroupTableData
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.server.services.placement_group_service import mount
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import StoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.fake_raylet import FakeRaylet, node_info
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs
from gcs_ha.testing.polling import until

JOB = b"\x01\x00\x00\x00"


def pg_id(n: int) -> bytes:
    return bytes([n]) * 14 + JOB


def spec(
    n: int, *bundles: dict[str, float], strategy: int = PACK, name: str = ""
) -> PlacementGroupSpec:
    made = PlacementGroupSpec(
        placement_group_id=pg_id(n),
        name=name,
        strategy=strategy,  # type: ignore[arg-type]
        creator_job_id=JOB,
        creator_actor_dead=True,
    )
    for index, resources in enumerate(bundles):
        bundle = made.bundles.add(unit_resources=resources)
        bundle.bundle_id.placement_group_id = pg_id(n)
        bundle.bundle_id.bundle_index = index
    return made


GCS_PORT = 18400  # this file: 18400-18499
RAYLET_PORT = 18480
RAFT_PORT, REPLICA_GCS_PORT = 18450, 18460
RAY_OK, RAY_INVALID, RAY_NOT_FOUND, RAY_INVALID_ARGUMENT = 0, 4, 17, 34
CREATED, PREPARED = PlacementGroupTableData.CREATED, PlacementGroupTableData.PREPARED
REMOVED = PlacementGroupTableData.REMOVED
WAIT_S = 15.0


class DroppingPublisher:
    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        pass


@dataclass
class Gcs:
    """The managers placement groups need, as the assembly wires them."""

    tables: GcsTableStorage
    pool: GrpcRayletClientPool
    nodes: NodeManager
    resources: ResourceManager
    groups: PlacementGroupManager

    @classmethod
    def over(cls, store: StoreClient) -> Gcs:
        tables = GcsTableStorage(store)
        pool = GrpcRayletClientPool()
        health = HealthCheckManager(pool, initial_delay_s=60.0)
        nodes = NodeManager(tables, DroppingPublisher(), pool, health)
        resources = ResourceManager(None)
        scheduler = PlacementGroupScheduler(resources, pool, cancel_interval_s=0.1)
        groups = PlacementGroupManager(tables, scheduler, resources, tick_s=0.1)
        nodes.add_node_added_listener(resources.on_node_added)
        nodes.add_node_removed_listener(resources.on_node_dead)
        nodes.add_node_added_listener(groups.on_node_added)
        nodes.add_node_removed_listener(groups.on_node_removed)
        nodes.set_in_use_providers(bundles=groups.bundles_in_use)
        return cls(tables, pool, nodes, resources, groups)

    def order(self) -> list[object]:
        return [self.pool, self.nodes, self.resources, self.groups]

    async def start(self) -> None:
        init = await GcsInitData.load(self.tables)
        for manager in self.order():
            await manager.start(init)  # type: ignore[attr-defined]
        await self.nodes.on_leader_started()

    async def stop(self) -> None:
        for manager in reversed(self.order()):
            await manager.stop()  # type: ignore[attr-defined]

    async def raylet(self, n: int, **resources: float) -> FakeRaylet:
        node = node_info(bytes([n]) * 28, RAYLET_PORT + n, resources or None)
        raylet = FakeRaylet(node, report=self.resources.update_from_view)
        await raylet.start()
        await self.nodes.register_node(raylet.node)
        return raylet


@asynccontextmanager
async def serving(gcs: Gcs, port: int) -> AsyncIterator[pb_grpc.PlacementGroupInfoGcsServiceStub]:
    await gcs.start()
    server = grpc.aio.server()
    mount(server, gcs.groups)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.PlacementGroupInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await server.stop(None)
        await gcs.stop()


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_the_service_creates_waits_reads_and_removes() -> None:
    async def body() -> None:
        gcs = Gcs.over(InMemoryStoreClient())
        raylets = []
        async with serving(gcs, GCS_PORT) as stub:
            raylets = [await gcs.raylet(1), await gcs.raylet(2)]
            two = spec(1, {"CPU": 1.0}, {"CPU": 1.0}, strategy=STRICT_SPREAD, name="pg")
            created = await stub.CreatePlacementGroup(
                pb.CreatePlacementGroupRequest(placement_group_spec=two)
            )
            assert created.status.code == RAY_OK and created.HasField("status")
            ready = await stub.WaitPlacementGroupUntilReady(
                pb.WaitPlacementGroupUntilReadyRequest(placement_group_id=pg_id(1)), timeout=WAIT_S
            )
            assert ready.status.code == RAY_OK
            got = await stub.GetPlacementGroup(
                pb.GetPlacementGroupRequest(placement_group_id=pg_id(1))
            )
            assert got.placement_group_table_data.state == CREATED
            assert {b.node_id for b in got.placement_group_table_data.bundles} == {
                r.node_id for r in raylets
            }
            named = await stub.GetNamedPlacementGroup(pb.GetNamedPlacementGroupRequest(name="pg"))
            assert named.placement_group_table_data.placement_group_id == pg_id(1)
            missing = await stub.GetNamedPlacementGroup(pb.GetNamedPlacementGroupRequest(name="no"))
            assert missing.status.code == RAY_OK and not missing.HasField(
                "placement_group_table_data"
            )

            taken = await stub.CreatePlacementGroup(
                pb.CreatePlacementGroupRequest(
                    placement_group_spec=spec(2, {"CPU": 1.0}, name="pg")
                )
            )
            assert taken.status.code == RAY_INVALID and "already exists" in taken.status.message
            bad = await stub.RemovePlacementGroup(
                pb.RemovePlacementGroupRequest(placement_group_id=b"x")
            )
            assert bad.status.code == RAY_INVALID_ARGUMENT

            removed = await stub.RemovePlacementGroup(
                pb.RemovePlacementGroupRequest(placement_group_id=pg_id(1))
            )
            assert removed.status.code == RAY_OK
            await until(lambda: all(r.available == r.total for r in raylets), "resources returned")
            after = await stub.WaitPlacementGroupUntilReady(
                pb.WaitPlacementGroupUntilReadyRequest(placement_group_id=pg_id(1))
            )
            assert after.status.code == RAY_NOT_FOUND
            every = await stub.GetAllPlacementGroup(pb.GetAllPlacementGroupRequest())
            assert every.total == 1 and every.placement_group_table_data[0].state == REMOVED
            limited = await stub.GetAllPlacementGroup(pb.GetAllPlacementGroupRequest(limit=0))
            assert limited.total == 1 and not limited.placement_group_table_data
        for raylet in raylets:
            await raylet.stop()

    run(body)


def test_a_wait_in_progress_ends_when_the_group_is_removed() -> None:
    async def body() -> None:
        gcs = Gcs.over(InMemoryStoreClient())
        async with serving(gcs, GCS_PORT + 1) as stub:
            one = await gcs.raylet(1, CPU=1.0)
            big = spec(1, {"CPU": 8.0})
            await stub.CreatePlacementGroup(
                pb.CreatePlacementGroupRequest(placement_group_spec=big)
            )
            wait = asyncio.ensure_future(
                stub.WaitPlacementGroupUntilReady(
                    pb.WaitPlacementGroupUntilReadyRequest(placement_group_id=pg_id(1))
                )
            )
            await asyncio.sleep(0.2)
            assert not wait.done()
            await stub.RemovePlacementGroup(
                pb.RemovePlacementGroupRequest(placement_group_id=pg_id(1))
            )
            reply = await asyncio.wait_for(wait, WAIT_S)
            assert (
                reply.status.code == RAY_NOT_FOUND
                and "before it is created" in reply.status.message
            )
        await one.stop()

    run(body)


def test_a_new_leader_finishes_placements_in_flight(tmp_path: Path) -> None:
    """Group 1 is CREATED; group 2 is stored PREPARED when the leader dies (its commit
    went out, the reply did not come back). The next leader, greeting the raylet through
    the real node manager, keeps every bundle, commits group 2 again and prepares
    nothing anew."""

    async def body() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT, REPLICA_GCS_PORT)
        async with InProcessCluster(configs) as cluster:
            leader = await cluster.leader()
            old = Gcs.over(leader.store)
            async with serving(old, GCS_PORT + 2) as stub:
                await old.tables.job_table.put(JOB, JobTableData(job_id=JOB, config=JobConfig()))
                one = await old.raylet(1, CPU=3.0)
                first = pb.CreatePlacementGroupRequest(placement_group_spec=spec(1, {"CPU": 1.0}))
                await stub.CreatePlacementGroup(first)
                await old.groups.wait_until_ready(pg_id(1))
                one.hold_commit = asyncio.Event()
                second = spec(2, {"CPU": 1.0}, {"CPU": 1.0}, name="second")
                await stub.CreatePlacementGroup(
                    pb.CreatePlacementGroupRequest(placement_group_spec=second)
                )
                await until(
                    lambda: one.calls.count("CommitBundleResources") == 2, "group 2 committing"
                )
                one.hold_commit = None
                stored = await old.tables.placement_group_table.get(pg_id(2))
                assert stored is not None and stored.state == PREPARED
            await cluster.stop(cluster.index_of(leader))

            successor = await cluster.leader()
            new = Gcs.over(successor.store)
            one.report_to = new.resources.update_from_view
            async with serving(new, GCS_PORT + 3) as stub:
                one.report()
                for n in (1, 2):
                    reply = await stub.WaitPlacementGroupUntilReady(
                        pb.WaitPlacementGroupUntilReadyRequest(placement_group_id=pg_id(n)),
                        timeout=WAIT_S,
                    )
                    assert reply.status.code == RAY_OK
                await until(lambda: bool(one.released_with), "released")
                assert one.released_with[0] == [(pg_id(1), 0), (pg_id(2), 0), (pg_id(2), 1)]
                assert (
                    one.calls.count("PrepareBundleResources") == 2
                )  # one per group, on the old leader
                assert one.committed() == [(pg_id(1), 0), (pg_id(2), 0), (pg_id(2), 1)]
                assert one.available["CPU"] == 0.0
                named = await stub.GetNamedPlacementGroup(
                    pb.GetNamedPlacementGroupRequest(name="second")
                )
                assert named.placement_group_table_data.state == CREATED
            await one.stop()

    run(body)
