"""Real Ray 2.60 actors and placement groups on gcs-ha: 200 actors, placement groups of
every strategy, the gcs-ha leader killed during actor and during placement group
creation, leadership moved while actors wait for resources, and a worker raylet killed.

One cluster for the module (3 gcs-ha replicas, a head from `gcs-ha ray-head`, two worker
raylets from `ray start --address`); the tests run in file order and the last one kills a
worker node for good. Drivers are `python -c` scripts: Ray is imported only in its own
processes. The setup is gcs_ha.testing.ray_nodes.ray_on_gcs_ha's, as in test_real_ray.py:
gcs-ha listens on 127.0.0.4 (Ray rewrites 127.0.0.1), gcs-ha ports 19000-19012, Ray's
19100-19999, and every Ray process is found and SIGKILLed by its session (never `ray stop`).
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections import Counter
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
from gcs_ha.testing.ray_nodes import RayProcesses, last_json, port_options, ray_on_gcs_ha

HOST = "127.0.0.4"
GCS_PORT, RAFT_PORT = 19000, 19010
WAVES, WAVE = 4, 50  # 200 actors; at most 50 (and the keeper) alive at a time
BURST = 12  # actors created while the leader is killed
PG_BURST = 16  # placement groups created while the leader is killed
WAITING, HOPS = 30, 4  # actors waiting for CPU while leadership moves HOPS times
ALIVE, DEAD = gcs_pb2.ActorTableData.ALIVE, gcs_pb2.ActorTableData.DEAD
Reason = common_pb2.ActorDiedErrorContext


def ray_ports(k: int) -> list[str]:
    """`ray start` port options of node k (0 = head): 20 ports each, and worker ports: 500
    for the head (most actors start on their owner's node), 150 for the others.

    The raylet gives each worker a port from its range that it can bind at once, and a
    killed worker's port stays unbindable for a while (its connections in TIME_WAIT):
    with 100 ports the head ran out during the 200 actors, and a worker that gets no port
    stalls its actor for the raylet's 60 s registration timeout."""
    first, last = (19500, 19999) if k == 0 else (19050 + 150 * k, 19199 + 150 * k)
    return port_options(19100 + 20 * k, range(first, last + 1))


# -- drivers ---------------------------------------------------------------------------


def next_line(proc: subprocess.Popen[str], start: str) -> str:
    """The driver's next stdout line that starts with `start` (Ray may print others)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(start):
            return line
    raise AssertionError(f"driver exited {proc.wait()} without a {start!r} line")


def tell(proc: subprocess.Popen[str], line: str) -> None:
    """Write one line to a driver's stdin."""
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


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
    leader: int  # the first leader; no Ray process talks to it
    f1: str  # the head and node2 use this replica
    f2: str  # node1 and most drivers use this one
    ray: RayProcesses
    head: str  # node ids (hex)
    workers: list[str]  # node1, node2
    init_log: Path  # actor constructors append "tag pid nonce time" lines here


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("real-ray-actors")
    with ray_on_gcs_ha(
        base, GCS_PORT, RAFT_PORT, HOST, "gha4-", failed=lambda: request.session.testsfailed > 0
    ) as on:
        head_args = ["--num-cpus=2", "--include-dashboard=false", "--dashboard-port=19107"]
        head_args += ["--ray-client-server-port=19106", *ray_ports(0)]
        node_args = ["--num-cpus=2", '--resources={"worker": 2}']
        head, workers = on.start_nodes(head_args, [[*node_args, *ray_ports(k)] for k in (1, 2)])
        f1, f2 = on.followers  # the head and node2 use f1, node1 uses f2
        ids = [w.node_id for w in workers]
        yield Cluster(on.gcs, on.leader, f1, f2, on.ray, head.node_id, ids, base / "inits.log")


# -- drivers (run as `python -c`, with Ray) ------------------------------------------------

PRELUDE = """
import json, os, sys, time, uuid
import ray
from ray.util.placement_group import placement_group, placement_group_table
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as OnNode
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup
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
    def node(self):
        return ray.get_runtime_context().get_node_id()

@ray.remote(num_cpus=0.25)
def where(i):
    return i * i, ray.get_runtime_context().get_node_id()

def until_dead(actor, timeout=60):
    # ray.kill and group removal are asynchronous: calls right after may still be answered.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.incr.remote(), timeout=30)
            time.sleep(0.2)
        except ray.exceptions.RayActorError as exc:
            return type(exc).__name__
    return "answered"

def settled(want, timeout=60):
    # The resource view lags the scheduler: wait until it shows what we expect.
    deadline = time.monotonic() + timeout
    while True:
        free = ray.available_resources()
        got = {k: round(free.get(k, 0), 4) for k in want}
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)

def nodes_of(pg):
    table = placement_group_table(pg)
    return table["state"], [table["bundles_to_node_id"][b] for b in range(len(pg.bundle_specs))]

def totals():
    have = ray.cluster_resources()
    return {"CPU": round(have["CPU"], 4), "worker": round(have["worker"], 4)}

def group_keys():
    return sorted(k for k in ray.available_resources() if "_group_" in k)
"""

# 200 actors in waves: the keeper (named, detached, kept for later tests), then by index
# i % 4: named detached "d", named "n", restartable "r", plain "p"; "n" and "p" with the
# SPREAD strategy. Each is called twice, named ones a third time by name; per wave one
# "r" has its worker SIGKILLed (restarted) and one "p" is killed; then "d", "n" and "r"
# are killed, the "p" go out of scope, and the wave must be DEAD before the next starts.
ACTORS = (
    PRELUDE
    + """
import gc
from ray._private import state

def make(i):
    if i == 0:
        return "keeper", Counter.options(name="keeper", lifetime="detached").remote("keeper", 100)
    tag = "dnrp"[i % 4] + str(i)
    options = [{"name": tag, "lifetime": "detached"},
               {"name": tag, "scheduling_strategy": "SPREAD"},
               {"max_restarts": 1}, {"scheduling_strategy": "SPREAD"}][i % 4]
    return tag, Counter.options(**options).remote(tag, i)

def restarted(actor, timeout=60):
    pid = ray.get(actor.who.remote(), timeout=30)[0]
    os.kill(pid, 9)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return [ray.get(actor.who.remote(), timeout=30)[0] != pid,
                    ray.get(actor.incr.remote(), timeout=30)]
        except ray.exceptions.RayError:
            time.sleep(0.5)

def wave(indexes, out):
    made = dict(make(i) for i in indexes)
    handles = list(made.values())
    first = ray.get([a.incr.remote() for a in handles], timeout=300)
    second = ray.get([a.incr.remote() for a in handles], timeout=60)
    named = [t for t in made if t[0] in "dnk"]
    third = ray.get([ray.get_actor(t).incr.remote() for t in named], timeout=60)
    third = dict(zip(named, third))
    who = ray.get([a.who.remote() for a in handles], timeout=60)
    for tag, one, two, (_, _, actor_id) in zip(made, first, second, who):
        out["calls"][tag] = [one, two] + ([third[tag]] if tag in third else [])
        out["ids"][tag] = actor_id
    r = next(t for t in made if t[0] == "r")
    out["restarted"][r] = restarted(made[r])
    p = next(t for t in made if t[0] == "p")
    ray.kill(made[p])
    out["killed"][p] = until_dead(made[p])
    for tag, handle in made.items():
        if tag[0] in "dnr":
            ray.kill(handle)
    # Dead by the kill before their handles go (else their death races with REF_DELETED).
    out["not_dead"] += not_dead([out["ids"][t] for t in made if t[0] in "dnr"])
    return [out["ids"][t] for t in made if t[0] == "p"]  # they go out of scope here

def not_dead(ids, timeout=60):
    deadline = time.monotonic() + timeout
    while ids and time.monotonic() < deadline:
        table = state.actors()
        ids = [i for i in ids if table[i]["State"] != "DEAD"]
        time.sleep(0.2)
    return ids

out = {"calls": {}, "ids": {}, "restarted": {}, "killed": {}, "not_dead": [], "waves": []}
waves, size = int(sys.argv[3]), int(sys.argv[4])
for w in range(waves):
    t0 = time.monotonic()
    ids = wave(range(w * size, (w + 1) * size), out)
    gc.collect()
    out["not_dead"] += not_dead(ids)
    out["waves"].append(round(time.monotonic() - t0, 1))
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

# One group of each strategy, a task and an actor in every bundle; removal. SPREAD is
# placed first: a soft spread lands on all three nodes only while each has room, and the
# other groups, created at once after it, can fill a worker node in some orders (PACK and
# STRICT_PACK both fit one exactly).
GROUPS = (
    PRELUDE
    + """
GROUPS = {"PACK": [{"CPU": 0.5}] * 2, "SPREAD": [{"CPU": 0.5}] * 3,
          "STRICT_PACK": [{"CPU": 0.5, "worker": 1}] * 2, "STRICT_SPREAD": [{"CPU": 0.5}] * 3}
want = totals()
out = {"totals": want, "before": settled(want), "groups": {}}
first = placement_group(GROUPS["SPREAD"], strategy="SPREAD")
ray.get(first.ready(), timeout=120)
pgs = {s: first if s == "SPREAD" else placement_group(b, strategy=s) for s, b in GROUPS.items()}
out["ready"] = len(ray.get([pg.ready() for pg in pgs.values()], timeout=120))
inside = []
for s, pg in pgs.items():
    state, nodes = nodes_of(pg)
    strategy = [InGroup(pg, placement_group_bundle_index=b) for b in range(len(nodes))]
    tasks = [where.options(scheduling_strategy=st).remote(b) for b, st in enumerate(strategy)]
    pinned = [Counter.options(num_cpus=0.25, scheduling_strategy=st).remote(s, b)
              for b, st in enumerate(strategy)]
    inside += pinned
    out["groups"][s] = {"state": state, "nodes": nodes, "tasks": ray.get(tasks, timeout=120),
                        "actors": ray.get([a.node.remote() for a in pinned], timeout=120),
                        "incr": ray.get([a.incr.remote() for a in pinned], timeout=60)}
out["during"] = settled({"CPU": want["CPU"] - 5, "worker": want["worker"] - 2}, 15)
for pg in pgs.values():
    remove_placement_group(pg)
out["actors_after"] = [until_dead(a) for a in inside]
out["after"] = settled(want)
out["keys_after"] = group_keys()
out["removed"] = [placement_group_table(pg)["state"] for pg in pgs.values()]
print(json.dumps(out))
"""
)

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

# Creates argv[3] named groups of small bundles, all strategies; once the first half is
# created and the first group is ready, prints "half" (the leader is killed then) and
# creates the rest; waits for all, checks the reservations, removes them.
PG_BURST_DRIVER = (
    PRELUDE
    + """
n = int(sys.argv[3])
want = totals()
ray.get(where.remote(0), timeout=120)
strategies = ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
specs = [(strategies[i % 4], [{"CPU": 0.1}] * (2 + i % 2)) for i in range(n)]
out = {"before": settled(want), "t0": time.monotonic()}
pgs = []
for i, (strategy, bundles) in enumerate(specs):
    pgs.append(placement_group(bundles, strategy=strategy, name=f"g{i}"))
    if i == n // 2 - 1:
        ray.get(pgs[0].ready(), timeout=60)
        print("half", flush=True)
pending, done_at = {pg.ready(): i for i, pg in enumerate(pgs)}, {}
while pending:
    ready, _ = ray.wait(list(pending), num_returns=1, timeout=180)
    assert ready, f"not ready: {sorted(pending.values())}"
    done_at[pending.pop(ready[0])] = time.monotonic()
out["done"] = max(done_at.values())
out["groups"] = [nodes_of(pg) for pg in pgs]
out["names"] = [placement_group_table(pg)["name"] for pg in pgs]
reserved = sum(0.1 * len(b) for _, b in specs)
out["during"] = settled({"CPU": round(want["CPU"] - reserved, 4), "worker": want["worker"]}, 15)
out["reserved"] = reserved
for pg in pgs:
    remove_placement_group(pg)
out["after"], out["totals"] = settled(want), want
out["keys_after"] = group_keys()
print(json.dumps(out), flush=True)
"""
)

# Takes every CPU with a placement group, then creates argv[3] actors that must wait for
# CPU (their CreateActor calls stay in flight); prints "ready" and waits for a stdin line
# (the leader moved several times meanwhile); frees the CPUs and prints what the actors
# answer.
WAITING_DRIVER = (
    PRELUDE
    + """
want = totals()
settled(want)
blocker = placement_group([{"CPU": 2.0}] * 3, strategy="STRICT_SPREAD")
ray.get(blocker.ready(), timeout=60)
waiting = [Counter.options(num_cpus=0.1).remote(f"hop{i}", i) for i in range(int(sys.argv[3]))]
time.sleep(2)  # registered, scheduled, leases queued at the raylets
print("ready", flush=True)
sys.stdin.readline()
remove_placement_group(blocker)
out = {"incr": ray.get([a.incr.remote() for a in waiting], timeout=240)}
for a in waiting:
    ray.kill(a)
out["after"] = settled(want)
print(json.dumps(out), flush=True)
"""
)

# Two groups with a bundle on each worker node (SPREAD over "worker") and on two nodes
# (STRICT_SPREAD); the victim is the worker node with a STRICT_SPREAD bundle. Restartable
# actors in every bundle on the victim and soft-pinned to it, one mortal actor there.
# Prints where everything is, waits for a stdin line (the victim was killed), then
# waits for the groups and actors to come back elsewhere.
RAYLET_DRIVER = (
    PRELUDE
    + """
workers = sys.argv[3].split(",")
spread = placement_group([{"worker": 0.5, "CPU": 0.5}] * 2, strategy="SPREAD")
strict = placement_group([{"CPU": 0.5}] * 2, strategy="STRICT_SPREAD")
ray.get([spread.ready(), strict.ready()], timeout=60)
out = {"spread": nodes_of(spread), "strict": nodes_of(strict)}
victim = next(w for w in workers if w in out["strict"][1])
pinned = {}
for i in range(3):
    on = OnNode(victim, soft=True)
    pinned[f"v{i}"] = Counter.options(max_restarts=1, num_cpus=0, resources={"worker": 0.1},
                                      scheduling_strategy=on).remote(f"v{i}", 10 * i)
mortal = Counter.options(num_cpus=0, resources={"worker": 0.1},
                         scheduling_strategy=OnNode(victim, soft=True)).remote("mortal", 0)
for name, pg in (("spread", spread), ("strict", strict)):
    for b, node in enumerate(out[name][1]):
        if node == victim:
            st = InGroup(pg, placement_group_bundle_index=b)
            pinned[f"{name}{b}"] = Counter.options(max_restarts=1, num_cpus=0.25,
                                                   scheduling_strategy=st).remote(f"{name}{b}", 5)
everyone = [*pinned.values(), mortal]
out["incr"] = ray.get([a.incr.remote() for a in everyone], timeout=120)
out["nodes"] = ray.get([a.node.remote() for a in everyone], timeout=60)
out["ids"] = dict(zip([*pinned, "mortal"], ray.get([a.who.remote() for a in everyone])))
out["victim"] = victim
print(json.dumps(out), flush=True)
sys.stdin.readline()
out = {}
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    out["spread"], out["strict"] = nodes_of(spread), nodes_of(strict)
    if all(s == "CREATED" and victim not in n for s, n in (out["spread"], out["strict"])):
        break
    time.sleep(0.5)
out["back"] = {}
for tag, actor in pinned.items():
    while time.monotonic() < deadline:
        try:
            out["back"][tag] = [ray.get(actor.node.remote(), timeout=30),
                                ray.get(actor.incr.remote(), timeout=30)]
            break
        except ray.exceptions.RayError:
            time.sleep(0.5)
out["mortal"] = until_dead(mortal, timeout=10)
tasks = [where.options(scheduling_strategy=InGroup(pg, placement_group_bundle_index=b)).remote(b)
         for pg in (spread, strict) for b in (0, 1)]
out["tasks"] = [node for _, node in ray.get(tasks, timeout=120)]
for pg in (spread, strict):
    remove_placement_group(pg)
for actor in pinned.values():
    ray.kill(actor)
out["totals"] = totals()
out["after"], out["keys_after"] = settled(out["totals"]), group_keys()
print(json.dumps(out), flush=True)
"""
)


def init_lines(log: Path, prefix: str) -> list[list[str]]:
    """The constructor log's [tag, pid, nonce, time] lines whose tag starts with `prefix`."""
    lines = [line.split() for line in log.read_text().splitlines()]
    return [line for line in lines if line[0].startswith(prefix)]


def start_of(tag: str) -> int:
    """An ACTORS actor's initial count: 100 for the keeper, else its index."""
    return 100 if tag == "keeper" else int(tag[1:])


def first_of(kind: int, wave: int) -> int:
    """The first ACTORS index of `kind` (i % 4) in wave `wave`."""
    return next(i for i in range(wave * WAVE, (wave + 1) * WAVE) if i % 4 == kind)


# -- the tests, in order -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~90 s alone; 200 worker processes start on a shared 2-core box
def test_200_actors_named_detached_killed_and_restarted(cluster: Cluster) -> None:
    c = cluster
    out = last_json(c.ray.driver(ACTORS, c.f2, str(c.init_log), str(WAVES), str(WAVE)), 540)
    print(f"\n{WAVES} waves of {WAVE} actors took {out['waves']} s")
    calls = out["calls"]
    assert len(calls) == WAVES * WAVE == 200
    for tag, answers in calls.items():
        s = start_of(tag)
        assert answers == [s + 1, s + 2] + ([s + 3] if tag[0] in "dnk" else []), tag
    # One restarted per wave (a new process, its state started over), one killed.
    restarted = {f"r{first_of(2, w)}" for w in range(WAVES)}
    assert out["restarted"] == {tag: [True, start_of(tag) + 1] for tag in restarted}
    killed = {f"p{first_of(3, w)}" for w in range(WAVES)}
    assert out["killed"] == dict.fromkeys(killed, "ActorDiedError")
    assert out["not_dead"] == []
    # Each constructor ran once, the restarted ones twice.
    tags = Counter(tag for tag, *_ in init_lines(c.init_log, ""))
    assert tags == {tag: 1 + (tag in restarted) for tag in calls}
    # The GCS's table: the keeper ALIVE, the others DEAD, each for its reason.
    table = actors(c.f1)
    for tag, actor_id in out["ids"].items():
        entry = table[actor_id]
        assert entry.num_restarts == (tag in restarted), tag
        if tag == "keeper":
            assert entry.state == ALIVE
            continue
        reason = entry.death_cause.actor_died_error_context.reason
        assert entry.state == DEAD, tag
        # Dropped handles: the owner's WaitForActorRefDeleted reply and its
        # ReportActorOutOfScope race (in Ray too); the first one names the cause.
        gone = tag[0] == "p" and tag not in killed
        dropped = (Reason.REF_DELETED, Reason.OUT_OF_SCOPE)
        assert reason in (dropped if gone else (Reason.RAY_KILL,)), (tag, entry)
    # A second driver reaches the named detached actor, with its state.
    assert last_json(c.ray.driver(KEEPER, c.f1, str(c.init_log)))["keeper"] == 104


@pytest.mark.slow
def test_placement_groups_of_every_strategy(cluster: Cluster) -> None:
    out = last_json(cluster.ray.driver(GROUPS, cluster.f2, str(cluster.init_log)))
    head, workers = cluster.head, sorted(cluster.workers)
    assert out["totals"] == {"CPU": 6, "worker": 4} and out["before"] == out["totals"]
    assert out["ready"] == 4
    groups = out["groups"]
    assert {s: g["state"] for s, g in groups.items()} == dict.fromkeys(groups, "CREATED")
    assert len(set(groups["PACK"]["nodes"])) == 1  # fits on one node, so packed there
    assert sorted(groups["SPREAD"]["nodes"]) == sorted([head, *workers])
    assert len(set(groups["STRICT_PACK"]["nodes"])) == 1
    assert groups["STRICT_PACK"]["nodes"][0] in workers  # only they have "worker"
    assert sorted(groups["STRICT_SPREAD"]["nodes"]) == sorted([head, *workers])
    for strategy, group in groups.items():
        # Each bundle's task and actor ran on the node that holds that bundle.
        assert [v for v, _ in group["tasks"]] == [b * b for b in range(len(group["nodes"]))]
        assert [n for _, n in group["tasks"]] == group["nodes"], strategy
        assert group["actors"] == group["nodes"], strategy
        assert group["incr"] == [b + 1 for b in range(len(group["nodes"]))]
    assert out["during"] == {"CPU": 1, "worker": 2}
    # Removal kills the actors inside and returns every reservation.
    assert out["actors_after"] == ["ActorDiedError"] * 10
    assert out["after"] == out["totals"] and out["keys_after"] == []
    assert out["removed"] == ["REMOVED"] * 4


@pytest.mark.slow
def test_leader_killed_during_actor_burst(cluster: Cluster) -> None:
    c = cluster
    leader = c.gcs.wait_for_leader(timeout=30)
    if leader != c.leader:  # an election under load moved it: the kill must hit c.leader
        with c.gcs.admin(leader, timeout=30) as admin:
            admin.transfer_leadership(c.gcs.node_id(c.leader))
    assert c.gcs.wait_for_leader(timeout=30) == c.leader, "leadership could not be moved back"
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
        assert entry.state == ALIVE, entry
        assert entry.num_restarts == 0
    assert driver.stdin is not None
    driver.stdin.close()
    driver.wait(timeout=60)
    # A new driver, on the other surviving replica, finds the detached actor and its state.
    assert last_json(c.ray.driver(KEEPER, c.f1, str(c.init_log)))["keeper"] == 105


@pytest.mark.slow
def test_leader_killed_during_placement_group_burst(cluster: Cluster) -> None:
    c = cluster
    # The first leader comes back and leads again: no Ray process talks to it.
    c.gcs.restart(c.leader)
    leader = c.gcs.wait_for_leader(timeout=30)
    with c.gcs.admin(leader, timeout=30) as admin:
        admin.transfer_leadership(c.gcs.node_id(c.leader))
    assert c.gcs.wait_for_leader(timeout=30) == c.leader
    driver = c.ray.driver(PG_BURST_DRIVER, c.f2, str(c.init_log), str(PG_BURST))
    next_line(driver, "half")
    killed_at = time.monotonic()
    c.gcs.kill(c.leader)
    c.gcs.wait_for_leader(timeout=30)
    out = last_json(driver)
    print(f"\n{PG_BURST} placement groups across the failover took {out['done'] - out['t0']:.1f} s")
    assert out["t0"] < killed_at < out["done"]
    nodes = {c.head, *c.workers}
    for state, bundle_nodes in out["groups"]:
        assert state == "CREATED" and set(bundle_nodes) <= nodes
    assert out["names"] == [f"g{i}" for i in range(PG_BURST)]
    # Every bundle reserved exactly once (none twice, none lost), then all returned.
    reserved = round(out["reserved"], 4)
    assert out["during"] == {"CPU": round(6 - reserved, 4), "worker": 4}
    assert out["after"] == out["totals"] == {"CPU": 6, "worker": 4}
    assert out["keys_after"] == []


def moved_from(gcs: ProcessCluster, old: int) -> int | None:
    """The leader, once it is not `old`."""
    leader = gcs.wait_for_leader(timeout=30)
    return leader if leader != old else None


@pytest.mark.slow
def test_leadership_moved_while_actors_wait_for_resources(cluster: Cluster) -> None:
    """Actors whose CreateActor calls are in flight (they wait for CPU) while leadership
    moves 4 times: every one is created once and answers its owner. Before the fixes in
    server/forwarding.py and server/ray_call.py, calls in flight on a retired forwarding
    channel or cut short by a demotion were never answered, and their owners waited
    forever."""
    c = cluster
    driver = c.ray.driver(WAITING_DRIVER, c.f2, str(c.init_log), str(WAITING))
    next_line(driver, "ready")
    leader = c.gcs.wait_for_leader(timeout=30)
    for _ in range(HOPS):
        with c.gcs.admin(leader, timeout=30) as admin:
            admin.transfer_leadership("")
        leader = wait_until(functools.partial(moved_from, c.gcs, leader), 30, "no new leader")
        time.sleep(0.5)
    tell(driver, "go")
    out = last_json(driver, timeout=300)
    assert out["incr"] == [i + 1 for i in range(WAITING)]
    assert sorted(tag for tag, *_ in init_lines(c.init_log, "hop")) == sorted(
        f"hop{i}" for i in range(WAITING)
    )  # each constructor ran exactly once
    assert out["after"] == {"CPU": 6, "worker": 4}


@pytest.mark.slow
def test_worker_raylet_killed(cluster: Cluster) -> None:
    c = cluster
    driver = c.ray.driver(RAYLET_DRIVER, c.f2, str(c.init_log), ",".join(c.workers))
    before = json.loads(next_line(driver, "{"))
    victim = before["victim"]
    survivor = next(w for w in c.workers if w != victim)
    assert sorted(before["spread"][1]) == sorted(c.workers)
    pinned = [t for t in before["ids"] if t != "mortal"]
    assert before["nodes"] == [victim] * (len(pinned) + 1)  # all on the victim
    c.ray.kill_node(f"node{c.workers.index(victim) + 1}")
    tell(driver, "killed")
    out = last_json(driver)
    # Both groups were placed again, away from the dead node.
    spread_state, spread_nodes = out["spread"]
    assert spread_state == "CREATED" and spread_nodes == [survivor, survivor]
    strict_state, strict_nodes = out["strict"]
    assert strict_state == "CREATED" and sorted(strict_nodes) == sorted([c.head, survivor])
    assert out["tasks"] == [*spread_nodes, *strict_nodes]
    # The restartable actors came back (constructor again: state from the start): the
    # soft-pinned ones on the other worker, one per group in its bundle's new node.
    groups = {"spread": spread_nodes, "strict": strict_nodes}
    want = {t: [survivor, 10 * int(t[1:]) + 1] for t in pinned if t[0] == "v"}
    want |= {t: [groups[t[:-1]][int(t[-1])], 6] for t in pinned if t[0] != "v"}
    assert len(want) == 5 and out["back"] == want
    assert out["mortal"] == "ActorDiedError"
    tags = Counter(tag for tag, *_ in init_lines(c.init_log, ""))
    assert {t: tags[t] for t in before["ids"]} == {t: 1 + (t in pinned) for t in before["ids"]}
    table = actors(c.f1)
    for tag, (_, _, actor_id) in before["ids"].items():
        entry = table[actor_id]
        if tag == "mortal":
            reason = entry.death_cause.actor_died_error_context.reason
            assert entry.state == DEAD and reason == Reason.NODE_DIED, entry
        else:
            assert entry.num_restarts == 1, (tag, entry)
    # The dead node's resources left the totals; the rest came back.
    assert out["totals"] == {"CPU": 4, "worker": 2}
    assert out["after"] == out["totals"] and out["keys_after"] == []
