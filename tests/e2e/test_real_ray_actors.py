"""Real Ray 2.60 actors and placement groups on gcs-ha, and the gcs-ha leader killed
during a burst of actor creations.

One cluster for the module (3 gcs-ha replicas, a head from `gcs-ha ray-head`, two worker
raylets from `ray start --address`); the tests run in file order. Drivers are `python -c`
scripts: Ray is imported only in its own processes. The setup is a small copy of
test_real_ray.py's (a test module, not importable from the package): gcs-ha listens on
127.0.0.4 (Ray rewrites 127.0.0.1), gcs-ha ports 39000-39012, Ray's 39100-39499, and every
Ray process is found and SIGKILLed at the end by its session (never `ray stop`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from gcs_ha.errors import UnavailableError
from gcs_ha.processes import gcs_ha_command, spawn
from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster, wait_until

HOST = "127.0.0.4"
GCS_PORT, RAFT_PORT = 39000, 39010
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
BURST = 12  # actors created while the leader is killed


def ray_ports(k: int) -> list[str]:
    """`ray start` port options of node k (0 = head): 20 ports and 100 worker ports each."""
    base, workers = 39100 + 20 * k, 39200 + 100 * k
    names = ("node-manager", "object-manager", "metrics-export", "dashboard-agent-listen",
             "dashboard-agent-grpc", "runtime-env-agent")  # fmt: skip
    ports = [f"--{name}-port={base + i}" for i, name in enumerate(names)]
    return [*ports, f"--min-worker-port={workers}", f"--max-worker-port={workers + 99}"]


# -- Ray processes, by session ---------------------------------------------------------


def session_members(sid: int) -> list[int]:
    """Our live (not zombie) processes in session `sid` (from /proc/PID/stat)."""
    me, pids = os.getuid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[3]) == sid and fields[0] != "Z" and entry.stat().st_uid == me:
                pids.append(int(entry.name))
    return pids


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


@dataclass
class RayProcesses:
    """Starts `ray start`-like commands in their own sessions; kills every session."""

    log_dir: Path
    starters: list[subprocess.Popen[bytes]] = field(default_factory=list)
    drivers: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str]) -> str:
        """Run `cmd` (a `ray start`) until it exits 0; returns its raylet's node id (hex)."""
        proc = spawn(cmd, self.log_dir / f"{name}.log")
        self.starters.append(proc)
        try:
            code: int | None = wait_until(proc.poll, 150, f"{name} did not start")
        except UnavailableError:
            code = None
        assert code == 0, f"{name} -> {code}\n{(self.log_dir / f'{name}.log').read_text()[-3000:]}"
        raylets = [p for p in session_members(proc.pid) if Path(cmdline(p)[0]).name == "raylet"]
        assert len(raylets) == 1, f"{name}: raylets {raylets}"
        return dict(a.split("=", 1) for a in cmdline(raylets[0]) if "=" in a)["--node_id"]

    def driver(self, script: str, *args: str) -> subprocess.Popen[str]:
        """A driver (`python -c script args`); stdin/stdout piped, stderr to drivers.log."""
        with open(self.log_dir / "drivers.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", script, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **RAY_ENV},
            )
        self.drivers.append(proc)
        return proc

    def close(self) -> None:
        """SIGKILL every driver and every process of every session we started."""
        for driver in self.drivers:
            driver.kill()
            driver.wait()
        sids = [proc.pid for proc in self.starters]
        for _ in range(5):  # a dying raylet may still start something: repeat
            pids = [p for sid in sids for p in session_members(sid)]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for proc in self.starters:
            proc.wait()


def last_json(proc: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    """Wait for a driver to exit 0; its last stdout line, as JSON."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"driver exited {proc.returncode}; see drivers.log"
    result: dict[str, Any] = json.loads([ln for ln in out.splitlines() if ln[:1] == "{"][-1])
    return result


def next_line(proc: subprocess.Popen[str], start: str) -> str:
    """The driver's next stdout line that starts with `start` (Ray may print others)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(start):
            return line
    raise AssertionError(f"driver exited {proc.wait()} without a {start!r} line")


def actors(address: str) -> dict[str, gcs_pb2.ActorTableData]:
    """The actor table (hex actor id -> entry), read through our stubs."""
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.ActorInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
    reply = stub.GetAllActorInfo(pb.GetAllActorInfoRequest(), timeout=10)
    channel.close()
    return {a.actor_id.hex(): a for a in reply.actor_table_data}


# -- the cluster -----------------------------------------------------------------------


@dataclass
class Cluster:
    gcs: ProcessCluster
    leader: int
    f1: str  # the head and node2 use this replica; it survives the leader's kill
    f2: str  # node1 and the failover driver use this one
    ray: RayProcesses
    workers: list[str]  # node ids (hex) of the two worker nodes
    init_log: Path  # actor constructors append "tag pid nonce time" lines here


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("real-ray-actors")
    temp_dir = tempfile.mkdtemp(prefix="gha4-", dir="/tmp")  # short: Ray's socket paths
    ray = RayProcesses(base / "ray-logs")
    ray_cli = str(Path(sys.executable).parent / "ray")
    with (
        pytest.MonkeyPatch.context() as mp,
        ProcessCluster(3, base / "gcs", GCS_PORT, RAFT_PORT, host=HOST) as gcs,
    ):
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        try:
            gcs.start()
            leader = gcs.wait_for_leader(timeout=60)
            f1, f2 = (gcs.gcs_address(i) for i in sorted(gcs.members) if i != leader)
            head_args = ["--num-cpus=2", "--include-dashboard=false", "--dashboard-port=39107"]
            head_args += ["--ray-client-server-port=39106", f"--temp-dir={temp_dir}"]
            head = [*gcs_ha_command(), "ray-head", f"--address={f1}", "--", *head_args]
            ray.start("head", [*head, *ray_ports(0)])
            node_args = ["--num-cpus=2", '--resources={"worker": 2}', f"--temp-dir={temp_dir}"]
            workers = [
                ray.start(
                    f"node{k}", [ray_cli, "start", f"--address={a}", *node_args, *ray_ports(k)]
                )
                for k, a in ((1, f2), (2, f1))
            ]
            yield Cluster(gcs, leader, f1, f2, ray, workers, base / "inits.log")
        finally:
            ray.close()
            if request.session.testsfailed == 0:
                shutil.rmtree(temp_dir, ignore_errors=True)
            else:
                print(f"Ray logs kept in {temp_dir}, gcs-ha and launcher logs in {base}")


# -- drivers (run as `python -c`, with Ray) ------------------------------------------------

PRELUDE = """
import json, os, sys, time, uuid
import ray
ray.init(address=sys.argv[1], namespace="gha4", log_to_driver=False)
LOG = sys.argv[2]

@ray.remote
class Counter:
    def __init__(self, tag, start=0):
        self.nonce = uuid.uuid4().hex
        with open(LOG, "a") as f:
            f.write(f"{tag} {os.getpid()} {self.nonce} {time.monotonic()}\\n")
        self.n = start
    def incr(self):
        self.n += 1
        return self.n
    def who(self):
        return os.getpid(), self.nonce, ray.get_runtime_context().get_actor_id()
"""

ACTORS = (
    PRELUDE
    + """
out = {}
keeper = Counter.options(name="keeper", lifetime="detached").remote("keeper", 100)
named = [Counter.options(name=f"n{i}").remote(f"n{i}", 10 * i) for i in range(5)]
restartable = [Counter.options(max_restarts=1).remote(f"r{i}", 0) for i in range(5)]
plain = [Counter.remote(f"p{i}", i) for i in range(9)]
everyone = [keeper, *named, *restartable, *plain]
out["count"] = len(everyone)
out["first"] = ray.get([a.incr.remote() for a in everyone], timeout=180)
out["second"] = ray.get([a.incr.remote() for a in everyone], timeout=60)
out["by_name"] = ray.get(ray.get_actor("n3").incr.remote())
ray.kill(plain[0])
# ray.kill is asynchronous (through the GCS): a call right after it may still be answered.
out["killed"], deadline = "answered", time.monotonic() + 30
while out["killed"] == "answered" and time.monotonic() < deadline:
    try:
        ray.get(plain[0].incr.remote(), timeout=30)
        time.sleep(0.2)
    except ray.exceptions.RayActorError as exc:
        out["killed"] = type(exc).__name__
pid = ray.get(restartable[0].who.remote())[0]
os.kill(pid, 9)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        out["restarted"] = [ray.get(restartable[0].who.remote(), timeout=30)[0] != pid,
                            ray.get(restartable[0].incr.remote(), timeout=30)]
        break
    except ray.exceptions.RayError:
        time.sleep(0.5)
rest = [*named, *restartable[1:], *plain[1:]]
out["others"] = ray.get([a.incr.remote() for a in rest], timeout=60)
print(json.dumps(out))
"""
)

KEEPER = (
    PRELUDE
    + """
keeper = ray.get_actor("keeper")
print(json.dumps({"keeper": ray.get(keeper.incr.remote(), timeout=120)}))
"""
)

PLACEMENT = """
import json, sys, time
import ray
from ray.util.placement_group import placement_group, placement_group_table
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
ray.init(address=sys.argv[1], namespace="gha4", log_to_driver=False)

@ray.remote(resources={"worker": 1})
def where(i):
    return i * i, ray.get_runtime_context().get_node_id()

def settled(want, timeout=60):
    # The resource view lags the scheduler: wait until it shows what we expect.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        free = ray.available_resources()
        got = {k: free.get(k, 0) for k in want}
        if got == want:
            break
        time.sleep(0.2)
    return got

totals = ray.cluster_resources()
want = {"worker": totals["worker"], "CPU": totals["CPU"]}
out = {"totals": want, "before": settled(want)}
pg = placement_group([{"worker": 1, "CPU": 1}] * 2, strategy="STRICT_SPREAD")
out["ready"] = ray.get(pg.ready(), timeout=60) is not None
t = placement_group_table(pg)
out["state"], out["bundle_nodes"] = t["state"], t["bundles_to_node_id"]
tasks = [
    where.options(
        num_cpus=1,
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=b),
    ).remote(b + 3)
    for b in (0, 1)
]
out["tasks"] = ray.get(tasks, timeout=120)
out["during"] = settled({"worker": want["worker"] - 2}, timeout=15)
remove_placement_group(pg)
out["after"] = settled(want)
out["removed"] = placement_group_table(pg)["state"]
print(json.dumps(out))
"""

# Prints "ready", then creates argv[3] actors at once; prints what they answer and waits
# (keeping them alive) until stdin closes.
BURST_DRIVER = (
    PRELUDE
    + """
ray.get(Counter.remote("warmup").incr.remote(), timeout=120)
print("ready", flush=True)
t0 = time.monotonic()
burst = [Counter.remote(f"b{i}", i) for i in range(int(sys.argv[3]))]
out = {"t0": t0, "incr": ray.get([a.incr.remote() for a in burst], timeout=240)}
out["who"] = ray.get([a.who.remote() for a in burst], timeout=60)
out["s"] = time.monotonic() - t0
print(json.dumps(out), flush=True)
sys.stdin.read()
"""
)


def init_lines(log: Path, prefix: str) -> list[list[str]]:
    """The constructor log's [tag, pid, nonce, time] lines whose tag starts with `prefix`."""
    lines = [line.split() for line in log.read_text().splitlines()]
    return [line for line in lines if line[0].startswith(prefix)]


# -- the tests, in order -----------------------------------------------------------------


@pytest.mark.slow
def test_actors_named_detached_killed_and_restarted(cluster: Cluster) -> None:
    c = cluster
    out = last_json(c.ray.driver(ACTORS, c.f2, str(c.init_log)))
    starts = [100, *(10 * i for i in range(5)), *([0] * 5), *range(9)]
    assert out["count"] == 20
    assert out["first"] == [s + 1 for s in starts]
    assert out["second"] == [s + 2 for s in starts]
    assert out["by_name"] == 33
    assert out["killed"] == "ActorDiedError"
    # Restarted: a new process whose state starts over (the constructor ran again).
    assert out.get("restarted") == [True, 1]
    # Everyone else but the keeper kept its state: a third call (n3 also had by_name's).
    others = [s + 3 for s in [*starts[1:6], *starts[7:11], *starts[12:]]]
    others[3] += 1
    assert out["others"] == others
    tags = Counter(tag for tag, *_ in init_lines(c.init_log, ""))
    assert tags["r0"] == 2 and tags["keeper"] == 1 and len(tags) == 20
    # A second driver reaches the named detached actor, with its state.
    assert last_json(c.ray.driver(KEEPER, c.f1, str(c.init_log)))["keeper"] == 103


@pytest.mark.slow
def test_strict_spread_placement_group(cluster: Cluster) -> None:
    out = last_json(cluster.ray.driver(PLACEMENT, cluster.f2))
    workers = sorted(cluster.workers)
    assert out["before"] == out["totals"] and out["totals"]["worker"] == 4
    assert out["ready"] and out["state"] == "CREATED"
    assert sorted(out["bundle_nodes"].values()) == workers
    # Each bundle's task ran on the node that holds that bundle.
    assert [v for v, _ in out["tasks"]] == [9, 16]
    assert [n for _, n in out["tasks"]] == [out["bundle_nodes"][b] for b in ("0", "1")]
    assert out["during"] == {"worker": 2}
    assert out["after"] == out["totals"]
    assert out["removed"] == "REMOVED"


@pytest.mark.slow
def test_leader_killed_during_actor_burst(cluster: Cluster) -> None:
    c = cluster
    assert c.gcs.wait_for_leader(timeout=30) == c.leader, "leadership moved before the kill"
    driver = c.ray.driver(BURST_DRIVER, c.f2, str(c.init_log), str(BURST))
    next_line(driver, "ready")
    time.sleep(0.5)
    killed_at = time.monotonic()
    c.gcs.kill(c.leader)
    c.gcs.wait_for_leader(timeout=30)
    out = json.loads(next_line(driver, "{"))
    assert out["incr"] == [i + 1 for i in range(BURST)]
    print(f"\nburst of {BURST} actors across the failover took {out['s']:.1f} s")
    # Each constructor ran exactly once, in the process that answers.
    inits = init_lines(c.init_log, "b")
    assert sorted(tag for tag, *_ in inits) == sorted(f"b{i}" for i in range(BURST))
    by_tag = {tag: (int(pid), nonce) for tag, pid, nonce, _ in inits}
    # The burst spans the failover (CLOCK_MONOTONIC is shared by every process here).
    assert out["t0"] < killed_at < max(float(t) for *_, t in inits)
    assert [(pid, nonce) for pid, nonce, _ in out["who"]] == [by_tag[f"b{i}"] for i in range(BURST)]
    table = actors(c.f1)
    for _, _, actor_id in out["who"]:
        entry = table[actor_id]
        assert entry.state == gcs_pb2.ActorTableData.ALIVE, entry
        assert entry.num_restarts == 0
    assert driver.stdin is not None
    driver.stdin.close()
    driver.wait(timeout=60)
    # A new driver, on the other surviving replica, finds the detached actor and its state.
    assert last_json(c.ray.driver(KEEPER, c.f1, str(c.init_log)))["keeper"] == 104
