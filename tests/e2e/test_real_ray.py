"""Real Ray 2.60 on gcs-ha: a head node from `gcs-ha ray-head`, two raylets from
`ray start --address`, drivers, `ray status`, and the gcs-ha leader killed under load.

One cluster for the whole module; the tests run in file order and build on each other
(the last ones stop raylets). Every process is real. Ray is only ever imported in its
own processes (drivers are `python -c` scripts): this process has gcs_ha.proto.ray, and
reads the GCS tables through it.

gcs-ha listens on 127.0.0.2: Ray rewrites 127.0.0.1 and "localhost" in a GCS address
to the machine's own IP, where nothing of ours listens; another loopback address is
kept as it is. Ray's processes use ports 16100-16499 (each node its own), gcs-ha
16000-16012. Ray's processes are found, and killed at the end, by session: each
`ray start` runs in a new session, which every process it starts inherits.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import grpc
import pytest

from gcs_ha.proto.ray import common_pb2, gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import (
    RayNode,
    RayProcesses,
    last_json,
    port_options,
    ray_head,
    ray_on_gcs_ha,
)
from gcs_ha.testing.sessions import alive, cmdline, session_members

HOST = "127.0.0.2"
GCS_PORT, RAFT_PORT = 16000, 16010
ALIVE, DEAD = gcs_pb2.GcsNodeInfo.ALIVE, gcs_pb2.GcsNodeInfo.DEAD
EXPECTED = common_pb2.NodeDeathInfo.EXPECTED_TERMINATION
UNEXPECTED = common_pb2.NodeDeathInfo.UNEXPECTED_TERMINATION
TASKS = 1000


def ray_ports(k: int) -> list[str]:
    """`ray start` port options of node k (0 = head): 20 ports and 100 worker ports each."""
    workers = 16200 + 100 * k
    return port_options(16100 + 20 * k, range(workers, workers + 100))


def run_driver(ray: RayProcesses, script: str, *args: str, timeout: float = 180) -> dict:  # type: ignore[type-arg]
    return last_json(ray.driver(script, *args), timeout)


# -- the GCS tables, read through our stubs ---------------------------------------------


def nodes(address: str) -> dict[str, gcs_pb2.GcsNodeInfo]:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
    reply = stub.GetAllNodeInfo(pb.GetAllNodeInfoRequest(), timeout=10)
    channel.close()
    return {n.node_id.hex(): n for n in reply.node_info_list}


def kv_get(address: str, namespace: bytes, key: bytes) -> bytes:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
    reply = stub.InternalKVGet(pb.InternalKVGetRequest(namespace=namespace, key=key), timeout=10)
    channel.close()
    assert reply.status.code == 0, reply.status
    return bytes(reply.value)


def alive_ids(address: str) -> set[str]:
    return {i for i, n in nodes(address).items() if n.state == ALIVE}


def wait_dead(address: str, node_id: str, timeout: float) -> gcs_pb2.GcsNodeInfo:
    def dead() -> gcs_pb2.GcsNodeInfo | None:
        node = nodes(address).get(node_id)
        return node if node is not None and node.state == DEAD else None

    return wait_until(dead, timeout, f"node {node_id[:8]} not DEAD")


# -- the cluster -----------------------------------------------------------------------


@dataclass
class Cluster:
    gcs: ProcessCluster
    leader: int
    addr: dict[str, str]  # role -> gcs-ha address that role uses (never the first leader)
    ray: RayProcesses
    temp_dir: str
    head: RayNode
    workers: list[RayNode]
    head_output: str = ""
    measured: dict[str, float] = field(default_factory=dict)


def head_options(*extra: str) -> list[str]:
    """The head's `ray start` options: 1 CPU, no dashboard UI (its head process still runs)."""
    ray_args = [*extra, "--num-cpus=1", "--include-dashboard=false", "--dashboard-port=16107"]
    return [*ray_args, "--ray-client-server-port=16106", *ray_ports(0)]


def node_options(k: int) -> list[str]:
    """Worker node k's: 2 CPUs and 2 units of the custom resource "worker"."""
    return ["--num-cpus=2", '--resources={"worker": 2}', *ray_ports(k)]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("real-ray")
    with ray_on_gcs_ha(
        base, GCS_PORT, RAFT_PORT, HOST, "ghr-", failed=lambda: request.session.testsfailed > 0
    ) as on:
        head, workers = on.start_nodes(head_options(), [node_options(1), node_options(2)])
        f1, f2 = on.followers  # the head and node2 use f1, node1 uses f2
        addr = {"head": f1, "node1": f2, "node2": f1, "driver": f2, "after": f1}
        yield Cluster(on.gcs, on.leader, addr, on.ray, on.temp_dir, head, workers, head.output)


# -- drivers (run as `python -c`, with Ray) ------------------------------------------------

PRELUDE = """
import json, sys, threading, time
import ray
from ray.experimental import internal_kv
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address=sys.argv[1])
WORKERS = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("worker"))

@ray.remote(resources={"worker": 1})
def square(i):
    return i * i, ray.get_runtime_context().get_node_id()

def submit(i):
    node = WORKERS[i % len(WORKERS)]
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    return square.options(scheduling_strategy=strategy).remote(i)

def run_tasks(n):
    results = ray.get([submit(i) for i in range(n)], timeout=300)
    per_node = {}
    for _, node in results:
        per_node[node] = per_node.get(node, 0) + 1
    return {"wrong": [i for i, (v, _) in enumerate(results) if v != i * i], "per_node": per_node}
"""

BASIC = (
    PRELUDE
    + """
out = run_tasks(int(sys.argv[2]))
# Ray's _internal_kv_put returns whether the key already existed.
out["put_new"] = internal_kv._internal_kv_put(b"k1", b"v1", namespace=b"t")
out["put_again"] = internal_kv._internal_kv_put(b"k1", b"v2", overwrite=False, namespace=b"t")
out["get"] = internal_kv._internal_kv_get(b"k1", namespace=b"t").decode()
out["exists"] = internal_kv._internal_kv_exists(b"k1", namespace=b"t")
out["list"] = [k.decode() for k in internal_kv._internal_kv_list(b"k", namespace=b"t")]
out["deleted"] = internal_kv._internal_kv_del(b"k1", namespace=b"t")
out["missing"] = internal_kv._internal_kv_get(b"k1", namespace=b"t")
out["alive"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
out["job"] = ray.get_runtime_context().get_job_id()
print(json.dumps(out))
"""
)

# Runs tasks (8 in flight, on both worker nodes) and internal-KV puts (own thread) for
# argv[2] seconds; prints "ready", then every completion time (CLOCK_MONOTONIC, shared by
# every process of the machine) as JSON.
FAILOVER = (
    PRELUDE
    + """
end = time.monotonic() + float(sys.argv[2])
kv_log, stop = [], threading.Event()

def kv_loop():
    n = 0
    while not stop.is_set():
        n += 1
        try:
            internal_kv._internal_kv_put(b"fo%d" % n, b"v", namespace=b"t")
            kv_log.append((time.monotonic(), "OK"))
        except Exception as exc:
            kv_log.append((time.monotonic(), repr(exc)[:200]))
        time.sleep(0.01)

thread = threading.Thread(target=kv_loop)
thread.start()
print("ready", flush=True)
pending, done, wrong, i = {}, [], [], 0
while time.monotonic() < end or pending:
    while len(pending) < 8 and time.monotonic() < end:
        pending[submit(i)] = i
        i += 1
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=90)
    for ref in ready:
        j = pending.pop(ref)
        if ray.get(ref)[0] != j * j:
            wrong.append(j)
        done.append(time.monotonic())
stop.set()
thread.join()
print(json.dumps({"tasks": done, "wrong": wrong, "submitted": i, "kv": kv_log}))
"""
)


def gap_around(times: list[float], at: float) -> float:
    """Last time before `at` to the first after it."""
    before = max(t for t in times if t <= at)
    after = min(t for t in times if t > at)
    return after - before


# -- the tests, in order -----------------------------------------------------------------


@pytest.mark.slow
def test_head_and_two_nodes_on_gcs_ha(cluster: Cluster) -> None:
    c = cluster
    assert f"ray start --address='{c.addr['head']}'" in c.head_output
    assert "no gcs_server started" in c.head_output
    table = nodes(c.addr["driver"])
    ids = {c.head.node_id, *(w.node_id for w in c.workers)}
    assert {i for i, n in table.items() if n.state == ALIVE} == ids
    assert [i for i, n in table.items() if n.is_head_node] == [c.head.node_id]
    assert not any(Path(cmdline(p)[0]).name == "gcs_server" for p in session_members(c.head.sid))
    kinds = " ".join(" ".join(cmdline(p)) for p in session_members(c.head.sid))
    for process in ("dashboard.py", "monitor.py", "log_monitor.py", "raylet"):
        assert process in kinds, process
    # The head's system config reached gcs-ha and is served to raylets.
    channel = grpc.insecure_channel(c.addr["driver"])
    kv = pb_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
    config = json.loads(kv.GetInternalConfig(pb.GetInternalConfigRequest(), timeout=10).config)
    channel.close()
    assert config["automatic_object_spilling_enabled"] is True
    assert json.loads(config["object_spilling_config"])["type"] == "filesystem"


@pytest.mark.slow
def test_driver_tasks_kv_and_nodes(cluster: Cluster) -> None:
    c = cluster
    out = run_driver(c.ray, BASIC, c.addr["driver"], str(TASKS))
    assert out["wrong"] == []
    assert out["per_node"] == {w.node_id: TASKS // 2 for w in c.workers}
    assert (out["put_new"], out["put_again"], out["get"]) == (False, True, "v1")
    assert (out["exists"], out["list"], out["deleted"], out["missing"]) == (True, ["k1"], 1, None)
    assert set(out["alive"]) == {c.head.node_id, *(w.node_id for w in c.workers)}


@pytest.mark.slow
def test_ray_status_shows_three_nodes(cluster: Cluster) -> None:
    ray_cli = str(Path(sys.executable).parent / "ray")

    def three() -> str | None:  # the autoscaler monitor refreshes it every 5 s
        cmd = [ray_cli, "status", f"--address={cluster.addr['driver']}"]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
        active = out.stdout.split("Active:")[-1].split("Pending:")[0]
        return out.stdout if len(re.findall(r"node_[0-9a-f]{56}", active)) == 3 else None

    status = wait_until(three, 60, "ray status does not show 3 active nodes")
    assert "Resources" in status


@pytest.mark.slow
def test_leader_killed_while_the_driver_runs_tasks(cluster: Cluster) -> None:
    c = cluster
    assert c.gcs.wait_for_leader(timeout=30) == c.leader, "leadership moved before the kill"
    before = alive_ids(c.addr["driver"])
    driver = c.ray.driver(FAILOVER, c.addr["driver"], "16")
    assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
    time.sleep(5)
    killed_at = time.monotonic()
    c.gcs.kill(c.leader)
    new_leader = c.gcs.wait_for_leader(timeout=30)
    c.measured["election_s"] = time.monotonic() - killed_at
    out_text, _ = driver.communicate(timeout=180)
    assert driver.returncode == 0, "driver failed; see drivers.log"
    out = json.loads(out_text.strip().splitlines()[-1])
    assert out["wrong"] == [] and len(out["tasks"]) == out["submitted"]
    assert [o for _, o in out["kv"] if o != "OK"] == []
    assert any(t > killed_at + 2 for t in out["tasks"]), "no task completed after the kill"
    c.measured["task_gap_s"] = gap_around(out["tasks"], killed_at)
    c.measured["task_gap_max_s"] = max(b - a for a, b in pairwise(out["tasks"]))
    c.measured["kv_gap_s"] = gap_around([t for t, _ in out["kv"]], killed_at)
    c.measured["tasks_during_drill"] = len(out["tasks"])
    print(f"\nleader r{c.leader} killed; r{new_leader} serves; measured: {c.measured}")
    # No raylet exited or registered again: the same nodes are alive, same processes.
    assert alive_ids(c.addr["after"]) == before
    assert all(alive(n.raylet_pid) for n in (c.head, *c.workers))


@pytest.mark.slow
def test_new_job_after_failover(cluster: Cluster) -> None:
    # The worker nodes learn of a new job only from the leader's job pubsub: its tasks
    # running there (on new worker processes for that job) show it was delivered.
    c = cluster
    out = run_driver(c.ray, BASIC, c.addr["after"], "100")
    assert out["wrong"] == [] and set(out["per_node"]) == {w.node_id for w in c.workers}
    job_id = bytes.fromhex(out["job"])
    channel = grpc.insecure_channel(c.addr["after"])
    jobs = pb_grpc.JobInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]

    def finished() -> bool | None:
        reply = jobs.GetAllJobInfo(pb.GetAllJobInfoRequest(), timeout=10)
        return any(j.job_id == job_id and j.is_dead for j in reply.job_info_list) or None

    wait_until(finished, 30, "the new job is not marked finished")
    channel.close()


@pytest.mark.slow
def test_graceful_stop_is_seen_dead_at_once(cluster: Cluster) -> None:
    c = cluster
    node = c.workers[1]
    os.kill(node.raylet_pid, signal.SIGTERM)
    dead = wait_dead(c.addr["after"], node.node_id, 10)
    assert dead.death_info.reason == EXPECTED
    # The head raylet heard it through the new leader's node-liveness pubsub.
    log = Path(os.readlink(f"/proc/{c.head.raylet_pid}/fd/1"))  # its raylet.out

    def heard() -> bool | None:
        return f"IsAlive = 0 node_id={node.node_id}" in log.read_text() or None

    wait_until(heard, 10, "the head raylet was not told the node died")
    out = run_driver(c.ray, BASIC, c.addr["after"], "10")
    assert node.node_id not in out["alive"]


@pytest.mark.slow
def test_killed_raylet_is_marked_dead_by_health_checks(cluster: Cluster) -> None:
    c = cluster
    node = c.workers[0]
    killed_at = time.monotonic()
    os.kill(node.raylet_pid, signal.SIGKILL)
    dead = wait_dead(c.addr["after"], node.node_id, 60)
    c.measured["health_check_death_s"] = time.monotonic() - killed_at
    print(f"\nmeasured: {c.measured}")
    assert dead.death_info.reason == UNEXPECTED
    assert "health check" in dead.death_info.reason_message
    assert alive_ids(c.addr["after"]) == {c.head.node_id}


@pytest.mark.slow
def test_head_restarted_on_the_same_cluster_keeps_the_session(cluster: Cluster) -> None:
    # Started again with --block, as under a supervisor; SIGTERM drains it through gcs-ha.
    c = cluster
    session = kv_get(c.addr["after"], b"session", b"session_name")
    c.ray.kill_session(c.head.sid)
    command = ray_head(c.addr["after"], *head_options("--block"), f"--temp-dir={c.temp_dir}")
    head = c.ray.start("head2", command)
    assert head.node_id != c.head.node_id
    assert kv_get(c.addr["after"], b"session", b"session_name") == session
    table = nodes(c.addr["after"])
    assert table[head.node_id].state == ALIVE and table[head.node_id].is_head_node
    assert table[c.head.node_id].state == DEAD  # replaced by the new head
    assert Path(table[head.node_id].session_dir).name == session.decode()
    os.kill(head.sid, signal.SIGTERM)  # the `gcs-ha ray-head` process, now `ray start`
    dead = wait_dead(c.addr["after"], head.node_id, 30)
    assert dead.death_info.reason == common_pb2.NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED
    # Ray's own shutdown of the head's children; slow on a loaded machine (once > 30 s in CI).
    wait_until(lambda: not session_members(head.sid) or None, 60, "head processes still run")
