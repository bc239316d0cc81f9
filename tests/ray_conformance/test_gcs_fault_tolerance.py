"""Ray's GCS fault-tolerance tests (python/ray/tests/test_gcs_fault_tolerance.py in Ray),
written again for gcs-ha (issue 12, item 2). docs/ray-integration.md, section "Ray's own
GCS tests, run against gcs-ha", maps every test of Ray's file to one here, or says why
there is none.

Where Ray's test kills its gcs_server and starts it again, these kill the gcs-ha leader
with SIGKILL and, once another replica serves, start the killed replica again. Where
Ray's test needs the GCS to be unavailable for a while, the majority is taken away: the
leader and the other follower are killed, only the replica Ray dials is left, and both
come back afterwards. Ray's processes all dial one follower (`home`), which the kills
never take away (gcs_ha/testing/ray_conformance.py).

One cluster for the module (3 replicas on 127.0.0.2, ports 20100-20112; a head node
with the dashboard, 20200-20219 and workers 20600-20659; other nodes further up, all in
20100-20999), started once. The tests run in file order: the last three change the
cluster for good (the head node is replaced, then every replica loses its data). The
head's system config is the one Ray's health-check tests use (checks every second,
failed after 3, from the start) plus autoscaler v2 and a 3 s raylet self-check.
Each test runs its own Ray drivers (`python -c`), which stop where the GCS must go away
(see DRIVER_PRELUDE in the harness for the TAG-line protocol).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.proto.ray import common_pb2, gcs_pb2
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_conformance import (
    ConformanceCluster,
    kill_pid,
    raylet_flag,
    wait_gone,
    write_module,
)
from gcs_ha.testing.ray_nodes import RayNode
from gcs_ha.testing.sessions import alive

pytestmark = [pytest.mark.slow, pytest.mark.release]  # ./dev test --release

FIRST_PORT = 20100
SELF_CHECK_MS = 3000
SYSTEM_CONFIG = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 3,
    "enable_autoscaler_v2": True,
    "raylet_liveness_self_check_interval_ms": SELF_CHECK_MS,
}
KEEP_LOGS = "GCS_HA_KEEP_RAY_LOGS"  # set: keep Ray's session logs even when all passed
DEAD = gcs_pb2.GcsNodeInfo.DEAD


def uid() -> str:
    return uuid.uuid4().hex[:8]


def raised(outcome: list[Any], exception: str) -> bool:
    """Whether a driver's `outcome(...)` is an exception of class `exception` (or a
    subclass)."""
    return outcome[0] != "ok" and exception in outcome[0]


@pytest.fixture(scope="module")
def conf(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ConformanceCluster]:
    cluster = ConformanceCluster(
        tmp_path_factory.mktemp("ray-conformance"), FIRST_PORT, SYSTEM_CONFIG
    )
    try:
        cluster.start()
        yield cluster
    finally:
        failed = request.session.testsfailed > 0
        cluster.close(keep_logs=failed or bool(os.environ.get(KEEP_LOGS)))


@pytest.fixture(autouse=True)
def restore_after(conf: ConformanceCluster) -> Iterator[None]:
    """Whatever a test left behind (it failed midway): its drivers killed, every replica
    running again."""
    yield
    conf.restore()


def worker_node(conf: ConformanceCluster) -> RayNode:
    """The cluster's one worker node (1 CPU), started the first time a test needs it."""
    live = [n for name, n in conf.nodes_started.items() if name.startswith("worker")]
    if live and alive(live[-1].raylet_pid):
        return live[-1]
    node = conf.start_node(f"worker{len(live)}", cpus=1)
    wait_until(lambda: node.node_id in conf.alive_nodes() or None, 60, "worker not ALIVE")
    return node


# -- a GCS restart with actors and tasks -------------------------------------------------

ACTORS_AND_TASKS = """
ray.init(address=ADDRESS)

@ray.remote
class Adder:
    def plus_two(self, x):
        return x + 2

@ray.remote
def plus_one(x):
    return x + 1

old = Adder.remote()
say("old_actor", ray.get(old.plus_two.remote(1), timeout=120))
wait_for_test("KILL")
new = Adder.remote()
say("new_actor", ray.get(new.plus_two.remote(2), timeout=120))
say("task", ray.get(plus_one.remote(1), timeout=120))
say("old_actor_again", ray.get(old.plus_two.remote(7), timeout=120))
"""


def test_gcs_server_restart(conf: ConformanceCluster) -> None:
    """An actor made before the leader died, one made after, and a task all work."""
    driver = conf.driver(ACTORS_AND_TASKS)
    assert driver.read("old_actor") == 3
    driver.read("KILL")
    conf.bring_back([conf.kill_leader()])
    driver.go()
    assert driver.read("new_actor") == 4
    assert driver.read("task") == 2
    assert driver.read("old_actor_again") == 9
    driver.finish()


# -- autoscaler state and node health across a restart -----------------------------------

AUTOSCALER_STATUS = """
from ray.autoscaler.v2.sdk import get_cluster_status

ray.init(address=ADDRESS)
alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
say("alive", alive)
wait_for_test("KILL")
last = []

def all_idle():
    try:
        last[:] = sorted(n.node_id for n in get_cluster_status(ADDRESS).idle_nodes)
    except Exception as exc:
        last[:] = [repr(exc)[:200]]
    return last == alive

start = time.monotonic()
say("idle", [bool(until(all_idle, 60, 0.5)), last, round(time.monotonic() - start, 2)])
"""


def test_autoscaler_init(conf: ConformanceCluster) -> None:
    """After a restart the GCS's autoscaler state reports both nodes, idle."""
    worker = worker_node(conf)
    assert conf.head is not None
    both = {conf.head.node_id, worker.node_id}
    driver = conf.driver(AUTOSCALER_STATUS)
    assert set(driver.read("alive")) == both  # two nodes, both alive
    driver.read("KILL")
    conf.bring_back([conf.kill_leader()])
    driver.go()
    idle, seen, seconds = driver.read("idle")
    assert idle, f"get_cluster_status().idle_nodes = {seen} after {seconds} s, wanted {both}"
    assert seconds <= 10, f"both nodes idle only after {seconds} s"  # Ray's bound
    driver.finish()


def test_node_failure_detector_when_gcs_server_restart(conf: ConformanceCluster) -> None:
    """A node that dies while the leader is dead is found dead by the next leader's
    health checks (every 1 s, dead after 3 failures)."""
    worker = worker_node(conf)
    assert conf.head is not None
    table = conf.node_table()
    assert {conf.head.node_id, worker.node_id} <= conf.alive_nodes()
    killed = conf.kill_leader()
    conf.kill_node(worker.name)
    wait_gone([worker.raylet_pid], 30)
    conf.bring_back([killed])
    back = time.monotonic()

    def dead() -> gcs_pb2.GcsNodeInfo | None:
        node = conf.node_table().get(worker.node_id)
        return node if node is not None and node.state == DEAD else None

    node = wait_until(dead, 30, "the killed node is not DEAD")
    seconds = time.monotonic() - back
    assert seconds <= 10, f"DEAD only {seconds:.1f} s after the replica came back"  # Ray's bound
    assert node.death_info.reason == common_pb2.NodeDeathInfo.UNEXPECTED_TERMINATION
    after = conf.node_table()
    assert set(after) == set(table)  # marked dead, not dropped, no other node
    assert conf.head.node_id in conf.alive_nodes()


# -- actors and workers whose processes die around a restart -----------------------------

ACTOR_DIES = """
ray.init(address=ADDRESS)

@ray.remote(max_restarts=0)
class Pid:
    def pid(self):
        return os.getpid()

actor = Pid.options(name="resubscribe-" + sys.argv[2]).remote()
wait_for_test("KILL", ray.get(actor.pid.remote(), timeout=120))
say("call", outcome(lambda: ray.get(actor.pid.remote(), timeout=60)))
"""


def test_actor_raylet_resubscription(conf: ConformanceCluster) -> None:
    """An actor (no restarts) whose process dies while the leader is dead is dead for
    its caller afterwards (RayActorError, no hang)."""
    driver = conf.driver(ACTOR_DIES, uid())
    pid = driver.read("KILL")
    killed = conf.kill_leader()
    kill_pid(pid)
    wait_gone([pid], 30)
    conf.bring_back([killed])
    driver.go()
    call = driver.read("call")
    assert raised(call, "RayActorError"), call
    driver.finish()


DELETE_ACTOR = """
from ray.util.state import get_actor as actor_state

ray.init(address=ADDRESS)
NAME = "delete-" + sys.argv[2]

@ray.remote
class Adder:
    def plus_two(self, x):
        return x + 2

actor = Adder.options(name=NAME).remote()
say("call", ray.get(actor.plus_two.remote(1), timeout=120))
wait_for_test("KILL")
actor_id = actor._actor_id.hex()
del actor

def dead():
    try:
        state = actor_state(id=actor_id)
    except Exception:
        return None
    return state is not None and state.state == "DEAD"

start = time.monotonic()
say("dead", [bool(until(dead, 60, 0.5)), round(time.monotonic() - start, 2)])
say("lookup", outcome(lambda: ray.get_actor(NAME) and "found"))
"""


def test_del_actor_after_gcs_server_restart(conf: ConformanceCluster) -> None:
    """A named actor whose last handle goes after a restart is DEAD and its name free
    (the owner's ReportActorOutOfScope reached the new leader)."""
    driver = conf.driver(DELETE_ACTOR, uid())
    assert driver.read("call") == 3
    driver.read("KILL")
    conf.bring_back([conf.kill_leader()])
    driver.go()
    dead, seconds = driver.read("dead")
    assert dead, f"the actor was not DEAD {seconds} s after its handle was dropped"
    assert seconds <= 10, f"DEAD only after {seconds} s"  # Ray's bound
    lookup = driver.read("lookup")
    assert raised(lookup, "ValueError"), lookup
    driver.finish()


WORKER_DEATH = """
ray.init(address=ADDRESS)
PID_FILE = sys.argv[2]

@ray.remote(num_cpus=0)
def child():
    with open(PID_FILE + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(PID_FILE + ".tmp", PID_FILE)
    while True:
        time.sleep(0.5)

@ray.remote(num_cpus=0)
def parent():
    ref = child.remote()
    until(lambda: os.path.exists(PID_FILE), 60)
    with open(PID_FILE) as f:
        return os.getpid(), int(f.read()), ref

parent_pid, child_pid, child_ref = ray.get(parent.remote(), timeout=120)
wait_for_test("KILL", [parent_pid, child_pid])

@ray.remote
class Probe:
    pass

ray.get(Probe.remote().__ray_ready__.remote(), timeout=120)
os.kill(parent_pid, 9)
wait_for_test("PARENT_KILLED")
say("child_result", outcome(lambda: ray.get(child_ref, timeout=60)))
"""


def test_raylet_resubscribe_to_worker_death(conf: ConformanceCluster, tmp_path: Path) -> None:
    """After a restart the raylet still hears of worker deaths: a task whose owner (its
    parent task's worker) dies is killed, and its result is OwnerDiedError."""
    driver = conf.driver(WORKER_DEATH, str(tmp_path / "child.pid"))
    parent_pid, child_pid = driver.read("KILL")
    assert parent_pid != child_pid
    conf.bring_back([conf.kill_leader()])
    driver.go()
    driver.read("PARENT_KILLED")
    wait_gone([child_pid], 20)  # killed with its owner, as in Ray's test
    driver.go()
    result = driver.read("child_result")
    assert raised(result, "OwnerDiedError"), result
    driver.finish()


CORE_WORKER_RESUBSCRIBE = """
from filelock import FileLock

ray.init(address=ADDRESS)
LOCK, STARTED = sys.argv[2], sys.argv[3]
held = FileLock(LOCK)
held.acquire()

@ray.remote
class Gated:
    def __init__(self, lock, started):
        open(started, "w").close()
        gate = FileLock(lock)
        gate.acquire()
        gate.release()

    def ready(self):
        return "ready"

gated = Gated.remote(LOCK, STARTED)
ref = gated.ready.remote()
until(lambda: os.path.exists(STARTED), 120)
wait_for_test("KILL", os.path.exists(STARTED))
held.release()
wait_for_test("RELEASED")
start = time.monotonic()
say("ready", [outcome(lambda: ray.get(ref, timeout=60)), round(time.monotonic() - start, 2)])
"""


def test_core_worker_resubscription(conf: ConformanceCluster, tmp_path: Path) -> None:
    """An actor still being created when the leader dies becomes ready once the GCS is
    back, and its caller hears it (the driver subscribed again)."""
    driver = conf.driver(CORE_WORKER_RESUBSCRIBE, str(tmp_path / "lock"), str(tmp_path / "s"))
    assert driver.read("KILL"), "the actor's constructor never started"
    killed = conf.kill_leader()
    driver.go()  # the constructor may finish now, while the leader is dead
    driver.read("RELEASED")
    conf.bring_back([killed])
    driver.go()
    ready, seconds = driver.read("ready")
    assert ready == ["ok", "ready"], ready
    assert seconds <= 5, f"ready only {seconds} s after the replica came back"  # Ray's bound
    driver.finish()


DETACHED_RESTARTS = """
ray.init(address=ADDRESS)

@ray.remote
class Pid:
    def pid(self):
        return os.getpid()

actor = Pid.options(name="detached-" + sys.argv[2], lifetime="detached", max_restarts=-1).remote()
wait_for_test("KILL", ray.get(actor.pid.remote(), timeout=120))

def answer():
    try:
        return ray.get(actor.pid.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return None

say("pid", until(answer, 120))
ray.kill(actor)
"""


def test_detached_actor_restarts(conf: ConformanceCluster) -> None:
    """A detached actor (restarted forever) whose process dies while the leader is dead
    is restarted: its next answer comes from another process."""
    driver = conf.driver(DETACHED_RESTARTS, uid())
    pid = driver.read("KILL")
    killed = conf.kill_leader()
    kill_pid(pid)
    conf.bring_back([killed])
    driver.go()
    new_pid = driver.read("pid", timeout=180)
    assert new_pid and new_pid != pid
    driver.finish()


# -- GCS clients -------------------------------------------------------------------------

CLIENT_RECONNECT = """
import asyncio
from concurrent.futures import ThreadPoolExecutor
from ray._raylet import GcsClient

ray.init(address=ADDRESS)
clients = {"worker": ray._private.worker.global_worker.gcs_client,
           "killed_replica": GcsClient(address=sys.argv[2])}
clients["worker"].internal_kv_put(b"reconnect", b"value", True, None)
say("before", {n: c.internal_kv_get(b"reconnect", None).decode() for n, c in clients.items()})

def get(client, asynchronous):
    if asynchronous:
        async def call():
            return await client.async_internal_kv_get(b"reconnect", None)
        value = asyncio.run(call())
    else:
        value = client.internal_kv_get(b"reconnect", None)
    return value.decode()

wait_for_test("KILL")
with ThreadPoolExecutor(4) as pool:
    futures = {f"{name}/{kind}": pool.submit(get, client, kind == "async")
               for name, client in clients.items() for kind in ("sync", "async")}
    wait_for_test("RESTART")
    say("values", {key: outcome(future.result) for key, future in futures.items()})
"""


def test_gcs_client_reconnect(conf: ConformanceCluster) -> None:
    """KV reads made while the leader is dead, sync and async, answer once the GCS is
    back: through the driver's own client (dialling the surviving `home`) and through a
    client of the killed replica itself (Ray's case: its server died and came back)."""
    target = conf.leader_to_kill()
    driver = conf.driver(CLIENT_RECONNECT, conf.gcs.gcs_address(target))
    assert driver.read("before") == {"worker": "value", "killed_replica": "value"}
    driver.read("KILL")
    conf.kill(target)
    driver.go()
    driver.read("RESTART")
    conf.bring_back([target])
    driver.go()
    values = driver.read("values")
    assert values == {
        f"{n}/{k}": ["ok", "value"] for n in ("worker", "killed_replica") for k in ("sync", "async")
    }
    driver.finish()


# -- workloads while the GCS is down -----------------------------------------------------

ACTOR_WORKLOADS = """
ray.init(address=ADDRESS, namespace="workloads-" + sys.argv[2])

@ray.remote(num_cpus=0)
class Echo:
    def echo(self, value):
        return value

first = Echo.remote()
detached = Echo.options(lifetime="detached", name="detached_echo").remote()
say("before", [ray.get(first.echo.remote(1), timeout=120),
               ray.get(detached.echo.remote("detached"), timeout=120)])
wait_for_test("DOWN")
existing = outcome(lambda: ray.get(first.echo.remote(1), timeout=30))
second = Echo.remote()
pending = second.echo.remote(2)
ready, _ = ray.wait([pending], timeout=0.1)
say("down", {"existing": existing, "new_ready": len(ready)})
wait_for_test("BACK")
say("after", {"new": outcome(lambda: ray.get(pending, timeout=120)),
              "existing": outcome(lambda: ray.get(first.echo.remote(1), timeout=60))})
ray.kill(detached)
"""


def test_actor_workloads(conf: ConformanceCluster) -> None:
    """With no majority (no replica can serve): calls to existing actors work, a new
    actor is not created; once the replicas are back it is, and answers."""
    driver = conf.driver(ACTOR_WORKLOADS, uid())
    assert driver.read("before") == [1, "detached"]
    driver.read("DOWN")
    killed = conf.lose_majority()
    driver.go()
    down = driver.read("down")
    assert down == {"existing": ["ok", 1], "new_ready": 0}, down
    driver.read("BACK")
    conf.bring_back(killed)
    driver.go()
    assert driver.read("after") == {"new": ["ok", 2], "existing": ["ok", 1]}
    driver.finish()


PG_ACTOR = """
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(address=ADDRESS)
group = placement_group([{"CPU": 1}], strategy="STRICT_PACK")
ray.get(group.ready(), timeout=120)

@ray.remote
class Echo:
    def echo(self, value):
        return value

    def pid(self):
        return os.getpid()

strategy = PlacementGroupSchedulingStrategy(placement_group=group)
actor = Echo.options(scheduling_strategy=strategy).remote()
say("before", ray.get(actor.echo.remote(10), timeout=120))
pid = ray.get(actor.pid.remote(), timeout=60)
wait_for_test("KILL")
say("during", outcome(lambda: ray.get(actor.echo.remote(10), timeout=60)))
wait_for_test("RESTART")
say("pids", [pid, sorted({ray.get(actor.pid.remote(), timeout=60) for _ in range(100)})])
remove_placement_group(group)
"""


def test_pg_actor_workloads(conf: ConformanceCluster) -> None:
    """An actor in a placement group answers while the leader is dead and after, from
    the same process (not restarted or rescheduled)."""
    driver = conf.driver(PG_ACTOR)
    assert driver.read("before") == 10
    driver.read("KILL")
    killed = conf.kill_leader()
    driver.go()
    assert driver.read("during") == ["ok", 10]
    driver.read("RESTART")
    conf.bring_back([killed])
    driver.go()
    pid, pids = driver.read("pids")
    assert pids == [pid]
    driver.finish()


GET_ACTOR = """
ray.init(address=ADDRESS)
NAME = "lookup-" + sys.argv[2]

@ray.remote
def make_actor(name):
    @ray.remote
    class Pid:
        def pid(self):
            return os.getpid()

    actor = Pid.options(lifetime="detached", name=name).remote()
    return ray.get(actor.pid.remote())

say("created", ray.get(make_actor.remote(NAME), timeout=120))

def lookup():
    start = time.monotonic()
    found = outcome(lambda: ray.get_actor(NAME) and "found")
    return [found, round(time.monotonic() - start, 2)]

wait_for_test("KILL")
say("leader_dead", lookup())
wait_for_test("DOWN")
say("majority_lost", lookup())
wait_for_test("BACK")
ray.kill(ray.get_actor(NAME))
"""


class GetActorNeverTimedOut(AssertionError):
    """ray.get_actor was still waiting long after its request timeout."""


GET_ACTOR_NO_TIMEOUT = (
    "gcs-ha without a majority: the replica Ray dials is up, holds each call 3 s and "
    "answers UNAVAILABLE on a healthy connection (gcs_ha/server/forwarding.py). Ray's "
    "RetryableGrpcClient queues the call again with a new deadline (now + the request "
    "timeout) and resends it at its next channel check (1 s) because the channel is "
    "READY; its deadline and the 60 s server-unavailable timeout are only enforced while "
    "the channel is not READY. So ray.get_actor never raises GetTimeoutError: it retries "
    "GetNamedActorInfo every ~4 s until a majority is back (Ray's GCS gone: connection "
    "refused, channel TRANSIENT_FAILURE, TimedOut after 10 s)."
)


@pytest.mark.xfail(strict=True, raises=GetActorNeverTimedOut, reason=GET_ACTOR_NO_TIMEOUT)
def test_get_actor_when_gcs_is_down(conf: ConformanceCluster) -> None:
    """ray.get_actor with the GCS down ends in GetTimeoutError after the request timeout
    (10 s here, as in Ray's test). With gcs-ha the GCS is down only without a majority:
    with just the leader dead the name is found (the next leader answers)."""
    env = {"RAY_gcs_server_request_timeout_seconds": "10"}
    driver = conf.driver(GET_ACTOR, uid(), env=env)
    driver.read("created")
    driver.read("KILL")
    leader = conf.kill_leader()
    driver.go()
    found, _ = driver.read("leader_dead")
    assert found == ["ok", "found"]
    driver.read("DOWN")
    conf.bring_back([leader])
    killed = conf.lose_majority()
    driver.go()
    try:
        lost, seconds = driver.read("majority_lost", timeout=20)
    except AssertionError as exc:
        if driver.proc.poll() is None:  # still blocked in ray.get_actor
            raise GetActorNeverTimedOut(str(exc)) from None
        raise
    assert raised(lost, "GetTimeoutError"), lost
    assert seconds >= 9, seconds
    driver.read("BACK")
    conf.bring_back(killed)
    driver.go()
    driver.finish()


# -- raylets across a restart ------------------------------------------------------------


def test_raylet_fate_sharing(conf: ConformanceCluster) -> None:
    """The GCS keeps its state (Ray's persistent-GCS case): raylets stay up across a
    restart, through two of their liveness self-checks (every 3 s) after it."""
    nodes = [n for n in conf.nodes_started.values() if alive(n.raylet_pid)]
    assert nodes
    conf.bring_back([conf.kill_leader()])
    end = time.monotonic() + 2 * SELF_CHECK_MS / 1000 + 1
    while time.monotonic() < end:
        assert all(alive(n.raylet_pid) for n in nodes), "a raylet exited"
        time.sleep(0.25)
    assert {n.node_id for n in nodes} <= conf.alive_nodes()


# -- actors that go out of scope while the GCS is down ----------------------------------

# Per case: does the job that made the actors end before the kill; is the detached
# parent killed while the leader is dead; which actors must be alive afterwards.
CASES = {
    "nobody_died": (False, False, {"regular", "parent", "child"}),
    "job_died": (True, False, {"parent", "child"}),
    "job_and_parent_died": (True, True, set()),
    "parent_died": (False, True, {"regular"}),
}
ACTOR_NAMES = ("regular", "parent", "child")

MAKE_ACTORS = """
ray.init(address=ADDRESS)

@ray.remote
class Family:
    def __init__(self):
        self.children = []

    def pid(self):
        return os.getpid()

    def spawn(self, name, namespace):
        child = Family.options(name=name, namespace=namespace).remote()
        self.children.append(child)
        return child

made, handles = {}, []
for case in json.loads(sys.argv[2]):
    ns = case + "-" + sys.argv[3]
    regular = Family.options(name="regular", namespace=ns).remote()
    parent = Family.options(name="parent", namespace=ns, lifetime="detached").remote()
    child = ray.get(parent.spawn.remote("child", ns), timeout=120)
    handles.append(regular)  # the job keeps its regular actor in scope
    made[case] = {name: ray.get(a.pid.remote(), timeout=120)
                  for name, a in (("regular", regular), ("parent", parent), ("child", child))}
wait_for_test("MADE", made)
"""

CHECK_ACTORS = """
expect = json.loads(sys.argv[4])

def pid_of(name, ns):
    return ray.get(ray.get_actor(name, namespace=ns).pid.remote(), timeout=60)

def gone(name, ns):
    try:
        ray.get_actor(name, namespace=ns)
    except ValueError:
        return True
    return False

seen = {}
for case, alive_names in expect.items():
    ns = case + "-" + sys.argv[3]
    seen[case] = {}
    for name in ("regular", "parent", "child"):
        if name in alive_names:
            seen[case][name] = outcome(lambda: pid_of(name, ns))
        else:
            until(lambda: gone(name, ns), 60, 0.5)
            seen[case][name] = outcome(lambda: pid_of(name, ns))
say("seen", seen)
for case in expect:  # the detached parents left (their children go with them)
    try:
        ray.kill(ray.get_actor("parent", namespace=case + "-" + sys.argv[3]))
    except ValueError:
        pass
"""


@dataclass
class OutOfScope:
    pids: dict[str, dict[str, int]]  # case -> actor -> pid before the kill
    seen: dict[str, dict[str, list[Any]]]  # case -> actor -> outcome after the restart


@pytest.fixture(scope="module")
def out_of_scope(conf: ConformanceCluster) -> OutOfScope:
    """Ray's four cases at once, one leader kill: the "job died" cases' actors are made
    by a driver that exits before the kill, the others' by one that stays; both
    parents of the "parent died" cases are killed while the leader is dead."""
    tag = uid()
    expect = {case: sorted(alive_after) for case, (_, _, alive_after) in CASES.items()}
    ending = [c for c, (job_dies, _, _) in CASES.items() if job_dies]
    staying = [c for c, (job_dies, _, _) in CASES.items() if not job_dies]
    first = conf.driver(MAKE_ACTORS, json.dumps(ending), tag)
    pids = dict(first.read("MADE"))
    first.go()
    first.finish()
    second = conf.driver(MAKE_ACTORS + CHECK_ACTORS, json.dumps(staying), tag, json.dumps(expect))
    pids.update(second.read("MADE"))
    killed = conf.kill_leader()
    for case, (_, parent_dies, _) in CASES.items():
        if parent_dies:
            kill_pid(pids[case]["parent"])
    conf.bring_back([killed])
    second.go()
    seen = second.read("seen", timeout=300)
    second.finish()
    return OutOfScope(pids, seen)


@pytest.mark.parametrize("case", list(CASES))
def test_gcs_server_restart_destroys_out_of_scope_actors(
    out_of_scope: OutOfScope, case: str
) -> None:
    """A regular actor, a detached parent and the child it owns; after the restart the
    GCS has destroyed exactly the actors whose owner died (job or parent), before or
    during the outage."""
    _, _, alive_after = CASES[case]
    for name in ACTOR_NAMES:
        seen = out_of_scope.seen[case][name]
        if name in alive_after:
            assert seen == ["ok", out_of_scope.pids[case][name]], (name, seen)
        else:
            assert raised(seen, "ValueError"), (name, seen)


# -- placement group bundles released by the next leader --------------------------------

STUCK_PLUGIN = '''
import asyncio
from ray._private.runtime_env.plugin import RuntimeEnvPlugin


class StuckSetup(RuntimeEnvPlugin):
    """A runtime env whose setup never ends (it says when it began)."""

    name = "stuck_setup"

    async def create(self, uri, runtime_env, context, logger):
        with open(runtime_env[self.name]["signal_path"], "w") as f:
            f.write("setting up")
        await asyncio.sleep(3600)
        return 0
'''

PG_REMOVAL = """
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init(address=ADDRESS)
SIGNAL = sys.argv[2]

@ray.remote
def never_runs():
    return None

group = placement_group([{"CPU": 1, "stuck_node": 1}])
ray.get(group.ready(), timeout=120)
never_runs.options(
    max_retries=0, num_cpus=1,
    scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group),
    runtime_env={"stuck_setup": {"signal_path": SIGNAL}, "config": {"setup_timeout_seconds": -1}},
).remote()
say("setup_started", bool(until(lambda: os.path.exists(SIGNAL), 120)))
remove_placement_group(group)
say("removed", bool(until(lambda: placement_group_table(group)["state"] == "REMOVED", 60)))

def group_keys():
    return sorted(k for k in ray.available_resources() if "group" in k)

wait_for_test("KILL", group_keys())
start = time.monotonic()
released = until(lambda: not group_keys() and "yes", 60, 0.5)
say("released", [bool(released), group_keys(), round(time.monotonic() - start, 2)])
"""


def removal_delayed(conf: ConformanceCluster) -> Callable[[], bool | None]:
    """Whether a raylet logged that it holds back a RemovePlacementGroupBundles call."""
    needle = "Delaying method NodeManagerService.grpc_server.RemovePlacementGroupBundles"

    def probe() -> bool | None:
        logs = conf.session_logs().glob("raylet*.err")
        return any(needle in p.read_text(errors="replace") for p in logs) or None

    return probe


def test_pg_removal_after_gcs_restarts(conf: ConformanceCluster, tmp_path: Path) -> None:
    """A removed placement group whose bundles the raylet has not given back yet (the
    raylet delays RemovePlacementGroupBundles by 500 s, a worker for the group is stuck
    in its runtime env setup) is released by the next leader (ReleaseUnusedBundles)."""
    plugins = tmp_path / "plugins"
    write_module(plugins, "gcs_ha_stuck_plugin", STUCK_PLUGIN)
    pythonpath = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p)
    plugin_env = {
        "RAY_RUNTIME_ENV_PLUGINS": json.dumps([{"class": "gcs_ha_stuck_plugin.StuckSetup"}]),
        "PYTHONPATH": pythonpath,
    }
    delay = "NodeManagerService.grpc_server.RemovePlacementGroupBundles=500000000:500000000"
    node = conf.start_node(
        "stuck", 1, {"stuck_node": 1}, {**plugin_env, "RAY_testing_asio_delay_us": delay}
    )
    try:
        driver = conf.driver(PG_REMOVAL, str(tmp_path / "signal"), env=plugin_env)
        assert driver.read("setup_started", timeout=180)
        assert driver.read("removed")
        held = driver.read("KILL")
        assert held, "the removed group's resources were already given back before the kill"
        wait_until(removal_delayed(conf), 30, "the raylet did not delay the bundles' removal")
        conf.bring_back([conf.kill_leader()])
        driver.go()
        released, left, seconds = driver.read("released")
        assert released, f"group resources {left} still there {seconds} s after the restart"
        driver.finish()
    finally:
        conf.kill_node(node.name)


# -- jobs marked finished ----------------------------------------------------------------

FINISHING_JOB = """
ray.init(address=ADDRESS)

@ray.remote
def double(i):
    return i * 2

say("results", ray.get([double.remote(i) for i in range(5)], timeout=120))
say("job", ray.get_runtime_context().get_job_id())
ray.shutdown()
say("shut_down")
"""

CONCURRENT_TASKS = """
ray.init(address=ADDRESS)

@ray.remote
def work(i):
    sum(k * k for k in range(100))
    return f"task {i} done"

say("results", ray.get([work.remote(i) for i in range(10)], timeout=120))
say("job", ray.get_runtime_context().get_job_id())
"""


def leader_identity(conf: ConformanceCluster) -> tuple[int, int, int]:
    """(index, pid, term) of the serving leader."""
    leader = conf.healthy_leader()
    process = conf.gcs.process(leader)
    assert process is not None
    return leader, process.pid, conf.gcs.status(leader).term


def wait_job_finished(conf: ConformanceCluster, job_hex: str, timeout: float = 30) -> None:
    def finished() -> bool | None:
        job = conf.job(job_hex)
        return (job is not None and job.is_dead) or None

    wait_until(finished, timeout, f"job {job_hex} not marked finished")


def test_mark_job_finished_rpc_retry_and_idempotency(conf: ConformanceCluster) -> None:
    """A driver whose MarkJobFinished replies are lost three times (Ray's RPC failure
    injection: the call reaches the GCS, the reply is dropped, the client sends it
    again) shuts down cleanly; the job is finished and the leader never failed."""
    before = leader_identity(conf)
    failures = {
        "ray::rpc::JobInfoGcsService.grpc_client.MarkJobFinished": {
            "num_failures": 3,
            "req_failure_prob": 0,
            "resp_failure_prob": 100,
            "in_flight_failure_prob": 0,
        }
    }
    driver = conf.driver(FINISHING_JOB, env={"RAY_testing_rpc_failure": json.dumps(failures)})
    assert driver.read("results") == [0, 2, 4, 6, 8]
    job = driver.read("job")
    driver.read("shut_down")
    driver.finish()
    wait_job_finished(conf, job)
    assert leader_identity(conf) == before


def test_concurrent_mark_job_finished(conf: ConformanceCluster) -> None:
    """Ten tasks at once, then the driver exits: every result right, the job finished,
    the leader the same process in the same term."""
    before = leader_identity(conf)
    driver = conf.driver(CONCURRENT_TASKS)
    assert driver.read("results") == [f"task {i} done" for i in range(10)]
    job = driver.read("job")
    driver.finish()
    wait_job_finished(conf, job)
    assert leader_identity(conf) == before


# -- the head node replaced (the GCS with it) --------------------------------------------

LONG_JOB = (
    f"{sys.executable} -c 'import ray, time; ray.init(); "
    "print(ray.cluster_resources(), flush=True); time.sleep(1000)'"
)


@dataclass
class HeadRestart:
    old: RayNode
    new: RayNode
    old_session_dir: str  # the raylets' --session_dir
    new_session_dir: str
    submission_id: str
    back_at: float  # time.monotonic() when the new head had started


def submit_job(dashboard: str, entrypoint: str) -> str:
    """Ray's Job API over HTTP (POST /api/jobs/); the submission id."""
    body = json.dumps({"entrypoint": entrypoint}).encode()
    request = urllib.request.Request(
        f"{dashboard}/api/jobs/", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return str(json.loads(reply.read())["submission_id"])


def submitted_job(conf: ConformanceCluster, submission_id: str) -> gcs_pb2.JobTableData | None:
    for job in conf.job_table():
        if job.config.metadata.get("job_submission_id") == submission_id:
            return job
    return None


@pytest.fixture(scope="module")
def head_restart(conf: ConformanceCluster) -> HeadRestart:
    """A job submitted and running; then the head node is killed with every process on
    it (the job's driver too) and, at the same time, the leader; then the replica and a
    new head node (new ports, same gcs-ha cluster) are started."""
    old = conf.head
    assert old is not None
    submission_id = submit_job(conf.dashboard_url(), LONG_JOB)

    def running() -> bool | None:
        job = submitted_job(conf, submission_id)
        return (job is not None and job.job_info.status == "RUNNING") or None

    wait_until(running, 60, "the submitted job is not RUNNING")
    old_session_dir = raylet_flag(old.raylet_pid, "session_dir")
    killed = conf.kill_leader()
    conf.kill_node(old.name)
    wait_gone([old.raylet_pid], 30)
    conf.bring_back([killed])
    new = conf.start_head("head-again", conf.next_node_index())
    back_at = time.monotonic()
    new_session_dir = raylet_flag(new.raylet_pid, "session_dir")
    return HeadRestart(old, new, old_session_dir, new_session_dir, submission_id, back_at)


def test_session_name(conf: ConformanceCluster, head_restart: HeadRestart) -> None:
    """A head node started again on the same (persistent) GCS keeps the session: the
    same session directory."""
    assert head_restart.new.node_id != head_restart.old.node_id
    assert head_restart.new_session_dir == head_restart.old_session_dir


def test_job_finished_after_head_node_restart(
    conf: ConformanceCluster, head_restart: HeadRestart
) -> None:
    """The job whose driver died with the head node is marked finished."""

    def finished() -> bool | None:
        job = submitted_job(conf, head_restart.submission_id)
        return (job is not None and job.is_dead) or None

    wait_until(finished, 30, "the job of the dead head node is not marked finished")
    seconds = time.monotonic() - head_restart.back_at
    assert seconds <= 10, f"marked finished only {seconds:.1f} s after the head came back"
    assert head_restart.old.node_id not in conf.alive_nodes()


# -- every replica loses its data --------------------------------------------------------

DETACHED_IN_TASK = """
ray.init(address=ADDRESS)

@ray.remote
def make_actor(name):
    @ray.remote
    class Pid:
        def pid(self):
            return os.getpid()

    actor = Pid.options(lifetime="detached", name=name).remote()
    return ray.get(actor.pid.remote())

say("actor_pid", ray.get(make_actor.remote("lost-" + sys.argv[2]), timeout=120))
"""


def test_redis_data_loss_no_leak(conf: ConformanceCluster) -> None:
    """Every replica loses its data (a new cluster, a new cluster id, on the same
    addresses): the raylets exit rather than serve a GCS that does not know them, and
    the detached actor's worker goes with its raylet."""
    driver = conf.driver(DETACHED_IN_TASK, uid())
    actor_pid = driver.read("actor_pid")
    driver.finish()
    raylets = [n.raylet_pid for n in conf.nodes_started.values() if alive(n.raylet_pid)]
    assert raylets and alive(actor_pid)
    conf.wipe_and_restart_all()
    wait_gone(raylets, 90)
    wait_gone([actor_pid], 30)
