"""NodeInfoGcsService over a real grpc.aio server on loopback, called with our generated
stubs and with Ray's own (in a subprocess: Ray's protobuf modules and ours cannot share a
process). The node table's survival across a leader change runs on a real 3-replica
in-process Raft cluster.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest

from gcs_ha.errors import UnknownOutcomeError
from gcs_ha.managers.health_check_manager import HealthCheckManager
from gcs_ha.managers.manager import GcsInitData
from gcs_ha.managers.node_manager import NodeManager
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.proto.ray import pubsub_pb2
from gcs_ha.proto.ray.common_pb2 import NodeDeathInfo
from gcs_ha.proto.ray.gcs_pb2 import GcsNodeInfo
from gcs_ha.server.clients.raylets import GrpcRayletClientPool
from gcs_ha.server.cluster_id import ClusterId
from gcs_ha.server.services.node_service import NodeInfoDeps, mount
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import StoreClient
from gcs_ha.storage.tables import GcsTableStorage
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs

GCS_PORT = 13200  # this file: 13200-13299
RAFT_PORT, REPLICA_GCS_PORT = 13250, 13260
ALIVE, DEAD = GcsNodeInfo.ALIVE, GcsNodeInfo.DEAD
INVALID_ARGUMENT = 34
CLUSTER_ID = bytes(range(28))
Selector = pb.GetAllNodeInfoRequest.NodeSelector


def node_info(n: int, **fields: object) -> GcsNodeInfo:
    return GcsNodeInfo(
        node_id=bytes([n]) * 28,
        node_manager_address="127.0.0.1",
        node_manager_port=13290 + n,  # nothing listens: health checks never start here
        node_name=f"node-{n}",
        resources_total={"CPU": 1.0},
        **fields,  # type: ignore[arg-type]
    )


class RecordingPublisher:
    def __init__(self) -> None:
        self.messages: list[pubsub_pb2.PubMessage] = []

    def publish(self, message: pubsub_pb2.PubMessage) -> None:
        self.messages.append(message)


class FlakyStore(InMemoryStoreClient):
    fail_writes = False

    async def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        if self.fail_writes:
            raise UnknownOutcomeError("leadership lost")
        return await super().put(table, key, value, overwrite)


@dataclass
class Gcs:
    """A node manager served on a grpc.aio server, and a client stub to it."""

    nodes: NodeManager
    publisher: RecordingPublisher
    stub: pb_grpc.NodeInfoGcsServiceStub
    address: str


@asynccontextmanager
async def serving(store: StoreClient, port: int) -> AsyncIterator[Gcs]:
    """Start pool, health checks and node manager over `store` and serve them."""
    tables = GcsTableStorage(store)
    publisher = RecordingPublisher()
    pool = GrpcRayletClientPool()
    health = HealthCheckManager(pool, initial_delay_s=3600.0)
    nodes = NodeManager(tables, publisher, pool, health)
    cluster_id = ClusterId()
    cluster_id.learn(CLUSTER_ID)
    init = await GcsInitData.load(tables)
    for manager in (pool, health, nodes):
        await manager.start(init)
    server = grpc.aio.server()
    mount(server, NodeInfoDeps(nodes, cluster_id))
    address = f"127.0.0.1:{port}"
    server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        stub = pb_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        yield Gcs(nodes, publisher, stub, address)
    finally:
        await channel.close(None)
        await server.stop(None)
        for manager in (nodes, health, pool):
            await manager.stop()


def run(body: Callable[[Gcs, FlakyStore], Awaitable[None]], port: int) -> None:
    async def main() -> None:
        store = FlakyStore()
        async with serving(store, port) as gcs:
            await body(gcs, store)

    asyncio.run(main())


def test_a_raylets_life_over_grpc() -> None:
    async def body(gcs: Gcs, store: FlakyStore) -> None:
        reply = await gcs.stub.RegisterNode(pb.RegisterNodeRequest(node_info=node_info(1)))
        assert reply.status.code == 0
        await gcs.stub.RegisterNode(pb.RegisterNodeRequest(node_info=node_info(2)))
        mine = await gcs.stub.GetAllNodeInfo(
            pb.GetAllNodeInfoRequest(node_selectors=[Selector(node_id=bytes([1]) * 28)])
        )
        assert [n.node_id for n in mine.node_info_list] == [bytes([1]) * 28]
        assert (mine.total, mine.num_filtered) == (2, 1)
        assert mine.node_info_list[0].resources_total["CPU"] == 1.0
        alive = await gcs.stub.CheckAlive(
            pb.CheckAliveRequest(node_ids=[bytes([1]) * 28, bytes([9]) * 28])
        )
        assert (alive.ray_version, list(alive.raylet_alive), alive.is_leader) == (
            "2.60.0",
            [True, False],
            True,
        )
        sigterm = NodeDeathInfo(
            reason=NodeDeathInfo.EXPECTED_TERMINATION, reason_message="received SIGTERM"
        )
        await gcs.stub.UnregisterNode(
            pb.UnregisterNodeRequest(node_id=bytes([2]) * 28, node_death_info=sigterm)
        )
        dead = await gcs.stub.GetAllNodeInfo(pb.GetAllNodeInfoRequest(state_filter=DEAD))
        [two] = dead.node_info_list
        assert (two.state, two.death_info, two.end_time_ms > 0) == (DEAD, sigterm, True)
        live = await gcs.stub.GetAllNodeAddressAndLiveness(pb.GetAllNodeAddressAndLivenessRequest())
        assert sorted((n.node_id[0], n.state) for n in live.node_info_list) == [
            (1, ALIVE),
            (2, DEAD),
        ]
        limited = await gcs.stub.GetAllNodeInfo(pb.GetAllNodeInfoRequest(limit=1))
        assert (len(limited.node_info_list), limited.total, limited.num_filtered) == (1, 2, 1)
        drained = await gcs.stub.DrainNode(
            pb.DrainNodeRequest(drain_node_data=[pb.DrainNodeData(node_id=bytes([2]) * 28)])
        )
        assert [s.node_id for s in drained.drain_node_status] == [bytes([2]) * 28]
        ids = await gcs.stub.GetClusterId(pb.GetClusterIdRequest())
        assert ids.cluster_id == CLUSTER_ID
        assert len(gcs.publisher.messages) == 6  # 3 transitions x 2 channels

    run(body, GCS_PORT)


def test_malformed_node_id_is_invalid_argument() -> None:
    async def body(gcs: Gcs, store: FlakyStore) -> None:
        bad = await gcs.stub.RegisterNode(
            pb.RegisterNodeRequest(node_info=GcsNodeInfo(node_id=b"x"))
        )
        assert bad.status.code == INVALID_ARGUMENT
        bad = await gcs.stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=b""))
        assert bad.status.code == INVALID_ARGUMENT

    run(body, GCS_PORT + 1)


def test_lost_write_is_unavailable_and_the_replay_registers() -> None:
    async def body(gcs: Gcs, store: FlakyStore) -> None:
        request = pb.RegisterNodeRequest(node_info=node_info(1))
        store.fail_writes = True
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gcs.stub.RegisterNode(request)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        store.fail_writes = False
        assert (await gcs.stub.RegisterNode(request)).status.code == 0
        assert (await gcs.stub.RegisterNode(request)).status.code == 0  # and again
        alive = await gcs.stub.CheckAlive(pb.CheckAliveRequest(node_ids=[bytes([1]) * 28]))
        assert list(alive.raylet_alive) == [True]
        assert len(gcs.publisher.messages) == 2

    run(body, GCS_PORT + 2)


RAY_CLIENT = """
import json, sys
import grpc
from ray.core.generated import gcs_pb2, gcs_service_pb2 as pb, gcs_service_pb2_grpc as pb_grpc
stub = pb_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(sys.argv[1]))
head = gcs_pb2.GcsNodeInfo(node_id=b"\\x05" * 28, node_manager_address="127.0.0.1",
                           node_manager_port=13295, is_head_node=True, temp_dir="/tmp/ray")
stub.RegisterNode(pb.RegisterNodeRequest(node_info=head))
sel = pb.GetAllNodeInfoRequest.NodeSelector(is_head_node=True)
found = stub.GetAllNodeInfo(pb.GetAllNodeInfoRequest(node_selectors=[sel],
                                                     state_filter=gcs_pb2.GcsNodeInfo.ALIVE))
alive = stub.CheckAlive(pb.CheckAliveRequest(node_ids=[head.node_id]))
live = stub.GetAllNodeAddressAndLiveness(pb.GetAllNodeAddressAndLivenessRequest())
print(json.dumps([[n.temp_dir for n in found.node_info_list], alive.ray_version,
                  list(alive.raylet_alive), alive.is_leader,
                  [n.node_manager_port for n in live.node_info_list]]))
"""


def test_rays_own_stubs_understand_us() -> None:
    async def body(gcs: Gcs, store: FlakyStore) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RAY_CLIENT,
            gcs.address,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out) == [["/tmp/ray"], "2.60.0", [True], True, [13295]]

    run(body, GCS_PORT + 3)


def test_node_table_survives_a_leader_change(tmp_path: Path) -> None:
    async def main() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT, REPLICA_GCS_PORT)
        async with InProcessCluster(configs) as cluster:
            leader = await cluster.leader()
            async with serving(leader.store, GCS_PORT + 10) as gcs:
                for n in (1, 2, 3):
                    request = pb.RegisterNodeRequest(node_info=node_info(n))
                    assert (await gcs.stub.RegisterNode(request)).status.code == 0
                await gcs.stub.UnregisterNode(pb.UnregisterNodeRequest(node_id=bytes([3]) * 28))
            await cluster.stop(cluster.index_of(leader))
            successor = await cluster.leader()
            assert successor is not leader
            async with serving(successor.store, GCS_PORT + 11) as gcs:
                alive = await gcs.stub.CheckAlive(
                    pb.CheckAliveRequest(node_ids=[bytes([n]) * 28 for n in (1, 2, 3)])
                )
                assert list(alive.raylet_alive) == [True, True, False]
                every = await gcs.stub.GetAllNodeInfo(pb.GetAllNodeInfoRequest())
                assert sorted((n.node_id[0], n.state) for n in every.node_info_list) == [
                    (1, ALIVE),
                    (2, ALIVE),
                    (3, DEAD),
                ]
                assert gcs.publisher.messages == []  # nothing re-registered

    asyncio.run(main())
