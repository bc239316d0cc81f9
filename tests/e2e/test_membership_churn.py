"""Concurrent membership changes under load, on real replica processes.

Two `gcs-ha join`s at once, then two `gcs-ha leave`s at once (one of them the leader's),
while the drill's KV load runs. The drill's checks then hold: the history is linearizable,
no acknowledged write is lost, the replicas agree, and no term had two leaders (from every
replica's log). Membership changes run one at a time inside the cluster; the second of
each pair is refused with UNAVAILABLE and retried by the CLI until it goes through.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gcs_ha.drill import checks, report
from gcs_ha.drill.workload import DrillLoad, WorkloadConfig, final_reads
from gcs_ha.testing.cluster import ProcessCluster, gcs_ha_command
from gcs_ha.testing.kvload import BackgroundLoad, Outcome

GCS_PORT = 26700
RAFT_PORT = 26800


def leave(cluster: ProcessCluster, via: int, target: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *gcs_ha_command(),
            "leave",
            f"--address={cluster.gcs_address(via)}",
            f"--node-id={cluster.node_id(target)}",
            f"--secret-file={cluster.secret_file}",
            "--timeout=60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_concurrent_joins_and_leaves_under_load(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, GCS_PORT, RAFT_PORT) as cluster:
        cluster.start()
        cluster.wait_for_members(3, cluster.wait_for_leader(timeout=60), timeout=60)
        workload = WorkloadConfig(tuple(cluster.gcs_address(i) for i in range(3)), clients=6)
        drill_load = DrillLoad(workload)
        load = BackgroundLoad(drill_load).start()
        started = time.monotonic()
        try:
            load.wait_acks(50, timeout=60)
            a, b = cluster.join_replica(via=0), cluster.join_replica(via=1)
            leader = cluster.wait_for_leader(timeout=60)
            cluster.wait_for_members(5, leader, timeout=120)
            follower = next(i for i in range(3) if i != leader)
            with ThreadPoolExecutor(2) as pool:
                left = list(pool.map(lambda t: leave(cluster, a, t), [leader, follower]))
            for result in left:
                assert result.returncode == 0, result.stderr
            cluster.members -= {leader, follower}
            survivor = min(cluster.members)
            cluster.wait_for_members(3, survivor, timeout=60)
            load.wait_acks(load.acks + 50, timeout=60)
        finally:
            history = load.stop()
        ended = time.monotonic()
        members = sorted(cluster.members)
        addresses = [cluster.gcs_address(i) for i in members]
        finals, ledger = asyncio.run(
            final_reads(addresses, workload.namespace, drill_load.keys.used)
        )
        replicas = {cluster.node_id(i): cluster.gcs_address(i) for i in members}
        digests = checks.digests(replicas, cluster.admin_key)
        logs = {cluster.node_id(i): cluster.log_path(i) for i in range(cluster.size)}
        result = checks.evaluate(
            config={"members": members},
            started=started,
            ended=ended,
            history=history,
            finals=finals,
            ledger=ledger,
            faults=(),
            digests=digests,
            leaders=checks.leaders_by_term(logs),
        )
    assert result.passed, report.failure_reasons(result)
    assert {cluster.node_id(i) for i in (a, b)} <= set(digests)
    assert result.leaders and len(result.leaders) >= 2  # the leader's leave moved leadership
    assert sum(op.outcome is Outcome.OK for op in history) > 200
