"""One simulated raylet on its own loopback address, called over real gRPC: its health
check, GetResourceLoad and bundle bookkeeping (no GCS needed)."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.testing.raylet_sim.fleet import Fleet, FleetConfig
from gcs_ha.testing.raylet_sim.gcs import node_ip
from gcs_ha.testing.raylet_sim.node import SimNode


async def _node_answers() -> None:
    fleet = Fleet(FleetConfig("127.0.0.1:1", nodes=2, ip_prefix="127.6", port=15600, cpus=2.0))
    nodes = [SimNode(fleet, i, node_ip("127.6", i), 15600, {"CPU": 2.0}) for i in range(2)]
    fleet.nodes = nodes
    for node in nodes:
        await node.serve()
    try:
        async with grpc.aio.insecure_channel(f"{nodes[1].ip}:15600") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=nodes[1].hex))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health.Check(health_pb2.HealthCheckRequest(service=nodes[0].hex))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            raylet = nm_grpc.NodeManagerServiceStub(channel)  # type: ignore[no-untyped-call]
            load = await raylet.GetResourceLoad(nm.GetResourceLoadRequest())
            assert bytes(load.resources.node_id) == nodes[1].node_id
            bundle = nm.PrepareBundleResourcesRequest()
            spec = bundle.bundle_specs.add(unit_resources={"CPU": 1.5})
            spec.bundle_id.placement_group_id = b"p" * 18
            assert (await raylet.PrepareBundleResources(bundle)).success
            assert nodes[1].available["CPU"] == 0.5 and nodes[1].dirty
            spec.bundle_id.bundle_index = 1  # a second 1.5 CPU does not fit
            assert not (await raylet.PrepareBundleResources(bundle)).success
            assert len(nodes[1].bundles) == 1
    finally:
        for node in nodes:
            await node.stop()


def test_a_node_answers_health_load_and_bundles_on_its_own_address() -> None:
    asyncio.run(_node_answers())
