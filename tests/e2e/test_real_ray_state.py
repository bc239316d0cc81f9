"""What Ray's dashboard, state API and autoscaler v2 read from gcs-ha is right, before and
after a leader kill (issue 12, item 4).

Real processes: a 3-replica gcs-ha cluster on 127.0.0.2 (ports 17000-17012), a head node
with the dashboard and autoscaler v2 (`--system-config` enable_autoscaler_v2, health
checks every second) from `gcs-ha ray-head` (17100-17299), one worker node from `ray
start --address` (17300-17499), Ray's own CLIs (`ray list`, `ray summary`, `ray status`,
`ray job`, `ray drain-node`) and a driver calling `get_cluster_status`. The tests run in
file order on one cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gcs_ha.proto.ray import common_pb2, gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import (
    RAY_ENV,
    RayNode,
    RayProcesses,
    kill_leader,
    port_options,
    ray_head_command,
    ray_on_gcs_ha,
    ray_worker,
    venv_cli,
    wait_for_dashboard,
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.2"
GCS_PORT, RAFT_PORT = 17000, 17010
DASHBOARD = f"http://{HOST}:17107"
ENV = {**os.environ, **RAY_ENV}
SYSTEM_CONFIG = {
    "enable_autoscaler_v2": True,
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
}

# Leaves a detached named actor and a detached placement group.
SETUP = """
import sys
import ray
from ray.util.placement_group import placement_group

ray.init(address=sys.argv[1], namespace="state")

@ray.remote(num_cpus=0)
class Keeper:
    def ping(self):
        return "pong"

keeper = Keeper.options(name="keeper", lifetime="detached").remote()
assert ray.get(keeper.ping.remote()) == "pong"
pg = placement_group([{"CPU": 1}], name="pg1", lifetime="detached")
ray.get(pg.ready(), timeout=60)
print("done", flush=True)
"""

# Runs 20 tasks named argv[2].
TASKS = """
import sys
import ray

ray.init(address=sys.argv[1])

@ray.remote(num_cpus=0)
def square(x):
    return x * x

refs = [square.options(name=sys.argv[2]).remote(i) for i in range(20)]
assert ray.get(refs) == [i * i for i in range(20)]
print("done", flush=True)
"""

STATUS = """
import json, sys
from ray.autoscaler.v2.sdk import get_cluster_status

status = get_cluster_status(sys.argv[1])
print(json.dumps({
    "idle": len(status.idle_nodes),
    "active": len(status.active_nodes),
    "cpus": status.total_resources().get("CPU", 0),
}))
"""

CHECK = 'print("job ran on gcs-ha")'


@dataclass
class Cluster:
    gcs: ProcessCluster
    ray: RayProcesses
    address: str  # the replica Ray's processes use
    worker: RayNode
    tmp: Path


def run(cmd: list[str], timeout: float = 120) -> str:
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert out.returncode == 0, (
        f"{cmd}: {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    )
    return out.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("real-ray-state")
    with ray_on_gcs_ha(tmp, GCS_PORT, RAFT_PORT, HOST, "ghs-") as c:
        config = [f"--system-config={json.dumps(SYSTEM_CONFIG)}"]
        c.ray.start(
            "head",
            ray_head_command(c.address, c.temp_dir, HOST, 17100, dashboard=True, extra=config),
        )
        node = ["--num-cpus=1", f"--temp-dir={c.temp_dir}"]
        node += [f"--node-ip-address={HOST}", *port_options(17300, range(17400, 17500))]
        worker = c.ray.start("worker", ray_worker(c.address, *node))
        wait_for_dashboard(DASHBOARD)
        yield Cluster(c.gcs, c.ray, c.address, worker, tmp)


def listed(kind: str) -> list[dict[str, str]]:
    """`ray list KIND` through the dashboard, as JSON ([] when it says there is none)."""
    out = run(venv_cli("ray", "list", kind, f"--address={DASHBOARD}", "--format=json"))
    return [] if out.startswith("No resource") else list(json.loads(out))


def state_cli_sees_everything(c: Cluster, tasks: str) -> None:
    """`ray list` and `ray summary` through the dashboard show what SETUP left and the
    TASKS run under the name `tasks`."""
    assert any(a["name"] == "keeper" and a["state"] == "ALIVE" for a in listed("actors"))
    assert sorted(n["state"] for n in listed("nodes")) == ["ALIVE", "ALIVE"]
    groups = listed("placement-groups")
    assert [g["state"] for g in groups if g["name"] == "pg1"] == ["CREATED"]

    def tasks_listed() -> list[dict[str, str]] | None:  # task events arrive in batches
        found = [t for t in listed("tasks") if t["name"] == tasks]
        return found if len(found) == 20 else None

    assert all(t["state"] == "FINISHED" for t in wait_until(tasks_listed, 60, "tasks"))
    summary = run(venv_cli("ray", "summary", "tasks", f"--address={DASHBOARD}"))
    assert tasks in summary


def autoscaler_v2_sees_two_nodes(c: Cluster) -> None:
    """`ray status` (v2 output) and get_cluster_status from a driver."""

    def two_nodes() -> dict[str, float] | None:
        proc = c.ray.driver(STATUS, c.address)
        out, _ = proc.communicate(timeout=120)
        found = json.loads(out.strip().splitlines()[-1]) if proc.returncode == 0 else None
        return found if found and found["idle"] + found["active"] == 2 else None

    found = wait_until(two_nodes, 60, "get_cluster_status does not see two nodes")
    assert found["cpus"] == 2
    status = run(venv_cli("ray", "status", f"--address={c.address}"))
    assert "Autoscaler" in status or "Node status" in status, status


def job_runs(c: Cluster, tag: str) -> None:
    submit = venv_cli("ray", "job", "submit", f"--address={DASHBOARD}", "--no-wait")
    out = run([*submit, f"--submission-id={tag}", "--", "python", "-c", CHECK])
    assert tag in out

    def finished() -> str | None:
        text = run(venv_cli("ray", "job", "status", f"--address={DASHBOARD}", tag)).lower()
        return text if any(s in text for s in ("succeeded", "failed", "stopped")) else None

    assert "succeeded" in wait_until(finished, 120, f"job {tag} did not finish")
    assert "job ran on gcs-ha" in run(venv_cli("ray", "job", "logs", f"--address={DASHBOARD}", tag))


def test_state_autoscaler_and_jobs_before_and_after_a_leader_kill(cluster: Cluster) -> None:
    c = cluster
    channel = grpc.insecure_channel(c.address)
    kv = pb_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
    v2 = pb.InternalKVGetRequest(namespace=b"__autoscaler", key=b"__autoscaler_v2_enabled")
    assert kv.InternalKVGet(v2, timeout=10).value == b"1"  # as the head's config says
    channel.close()
    proc = c.ray.driver(SETUP, c.address)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "done" in out, "the setup driver failed: drivers.log"
    for when in ("before", "after"):
        if when == "after":
            kill_leader(c.gcs)
        # Task events are kept in memory by the leader, as by Ray's GCS: a new leader
        # lists the tasks run since it leads.
        proc = c.ray.driver(TASKS, c.address, f"square_{when}")
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0 and "done" in out, "the tasks driver failed: drivers.log"
        state_cli_sees_everything(c, f"square_{when}")
        autoscaler_v2_sees_two_nodes(c)
        job_runs(c, f"job-{when}")


def test_a_node_drained_for_preemption_then_killed_dies_preempted(cluster: Cluster) -> None:
    c = cluster
    drain = ["drain-node", f"--address={c.address}", f"--node-id={c.worker.node_id}"]
    drain += ["--reason=DRAIN_NODE_REASON_PREEMPTION", "--reason-message=spot reclaimed"]
    run(venv_cli("ray", *drain, "--deadline-remaining-seconds=1"))
    c.ray.kill_node("worker")
    channel = grpc.insecure_channel(c.address)
    stub = pb_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]

    def dead() -> gcs_pb2.GcsNodeInfo | None:
        reply = stub.GetAllNodeInfo(pb.GetAllNodeInfoRequest(), timeout=10)
        found = [n for n in reply.node_info_list if n.node_id.hex() == c.worker.node_id]
        return found[0] if found and found[0].state == gcs_pb2.GcsNodeInfo.DEAD else None

    node = wait_until(dead, 60, "the drained node is not DEAD")
    channel.close()
    assert node.death_info.reason == common_pb2.NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED
    assert node.death_info.reason_message == "spot reclaimed"
