"""The raylet simulator against a real 3-replica gcs-ha cluster: 20 nodes register in a
raylet's order, answer the GCS's calls on their own loopback addresses, host actors and
placement groups, their views reach GetAllResourceUsage, and none is declared dead."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.raylet_sim import workload
from gcs_ha.testing.raylet_sim.fleet import Fleet, FleetConfig

GCS_PORT, RAFT_PORT, NODE_PORT = 15010, 15020, 15500
RAYLET_ORDER = [  # ray-gcs-contract.md section 3, a raylet's startup calls
    "GetInternalConfig",
    "RegisterNode",
    "GcsSubscriberCommandBatch",
    "CheckAlive",
    "GetAllNodeAddressAndLiveness",
    "GcsSubscriberCommandBatch",
    "StartSync",
    "GetAllJobInfo",
]


async def exercise(address: str) -> None:
    fleet = Fleet(FleetConfig(address, nodes=20, ip_prefix="127.5", port=NODE_PORT, cpus=0.2))
    try:
        await fleet.start()
        assert fleet.nodes[0].counters.calls == RAYLET_ORDER
        assert len({n.ip for n in fleet.nodes}) == 20
        await workload.add_job(fleet)
        await workload.create_actors(fleet, 30, concurrency=10)
        await workload.create_pgs(fleet, 10, concurrency=5)
        hosts = [n for n in fleet.nodes if n.workers]
        assert sum(len(n.workers) for n in hosts) == 30
        assert len(hosts) > 1  # node 0 filled to half, then spilled back
        assert sum(n.counters.pushes for n in fleet.nodes) == 30
        assert sum(len(n.bundles) for n in fleet.nodes) == 10
        node = fleet.nodes[7]
        assert await workload.probe(fleet, node, 42.0) is not None
        await asyncio.sleep(1.5)  # a GetResourceLoad round reaches every node
        assert all(n.counters.resource_loads > 0 for n in fleet.nodes)
        assert await workload.views_match(fleet, fleet.nodes[0].gcs) == 0
        assert await workload.dead_nodes(fleet) == 0
        assert not any(n.declared_dead for n in fleet.nodes)
    finally:
        await fleet.stop()


@pytest.mark.slow
def test_twenty_simulated_raylets_against_gcs_ha(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, gcs_port=GCS_PORT, raft_port=RAFT_PORT) as cluster:
        cluster.start()
        cluster.wait_for_leader(timeout=60)
        addresses = ",".join(cluster.gcs_address(i) for i in range(3))
        asyncio.run(exercise(addresses))
