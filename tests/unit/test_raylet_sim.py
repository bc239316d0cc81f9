"""Pieces of the raylet simulator and of `gcs-ha bench scale` that need no GCS."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.bench.scale import add_ratios, render_table
from gcs_ha.proto.ray import node_manager_pb2 as nm
from gcs_ha.proto.ray import node_manager_pb2_grpc as nm_grpc
from gcs_ha.testing.raylet_sim.fleet import Fleet, FleetConfig, gcs_target, node_ip
from gcs_ha.testing.raylet_sim.main import parse
from gcs_ha.testing.raylet_sim.node import SimNode, fits


def test_node_addresses_are_distinct_loopback_ips() -> None:
    ips = [node_ip("127.1", i) for i in range(1000)]
    assert len(set(ips)) == 1000
    assert ips[0] == "127.1.0.1" and ips[250] == "127.1.1.1"


def test_a_replica_list_becomes_one_pick_first_target() -> None:
    assert gcs_target("h:1") == "h:1"
    assert gcs_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"


def test_fits_compares_with_tolerance() -> None:
    assert fits({"CPU": 0.3}, {"CPU": 0.1 + 0.2})
    assert not fits({"CPU": 1.0, "GPU": 1.0}, {"CPU": 4.0})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse(["--gcs", "h:1", "--nodes", "0"])


def test_ratios_are_against_ray_memory_at_the_same_node_count() -> None:
    rows = add_ratios([
        {"system": "ray-memory", "nodes": 50, "actors_per_s": 100.0, "kib_per_node": 10.0},
        {"system": "gcs-ha-3", "nodes": 50, "actors_per_s": 50.0, "kib_per_node": 5.0},
        {"system": "gcs-ha-3", "nodes": 100, "actors_per_s": 50.0, "error": "x"},
    ])  # fmt: skip
    assert rows[1]["vs_ray_memory"] == {"actors_per_s": 0.5, "kib_per_node": 0.5}
    assert "vs_ray_memory" not in rows[2]
    text = render_table(rows)
    assert text.splitlines()[0].split()[:2] == ["system", "nodes"]
    assert text.splitlines()[-1] == "gcs-ha-3 at 100 nodes: x"


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
