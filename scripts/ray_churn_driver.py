"""The Ray driver of scripts/ray_churn.py (it imports Ray, so nothing from gcs_ha).

It runs rounds until `stop` arrives on stdin (the churn has done its share), each:
  pgs     create N placement groups (PACK, SPREAD and STRICT_PACK of two bundles,
          STRICT_SPREAD of one; every fifth one named), wait until every one is ready;
          check each is CREATED and that the GCS's view of the node shows exactly their
          CPU in use; remove them all.
  actors  create M actors (every tenth named and detached, every tenth named, all with
          max_restarts=1), wait until each answered; reach the detached ones by name;
          kill them all.
Then it prints `workload_done`, waits for `churn_stopped` and checks that everything
settled: every group REMOVED and no bundle resource left, all CPU available again, every
actor DEAD. Prints one JSON event per line; the last, `checked`, lists violations.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

BUNDLE_CPU = 0.0005
ACTOR_CPU = 0.001
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
SETTLE_S = 60.0
NAMESPACE = "ray-churn"


@ray.remote(num_cpus=ACTOR_CPU, max_restarts=1)
class Member:
    def __init__(self, i: int) -> None:
        self.i = i

    def ping(self) -> int:
        return self.i


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def wait_for(probe: Callable[[], bool], timeout: float = SETTLE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def cpu_in_use(total: float) -> float:
    return total - float(ray.available_resources().get("CPU", 0.0))


def run_pgs(r: int, n: int, total_cpu: float, violations: list[str]) -> None:
    """One round of placement groups (see the module docstring)."""
    start = time.monotonic()
    groups: list[PlacementGroup] = []
    for i in range(n):
        strategy = STRATEGIES[i % len(STRATEGIES)]
        count = 1 if strategy == "STRICT_SPREAD" else 2
        name = f"pg{r}-{i}" if i % 5 == 0 else ""
        groups.append(placement_group([{"CPU": BUNDLE_CPU}] * count, strategy, name))
    ray.get([g.ready() for g in groups], timeout=SETTLE_S * 5)
    emit("pgs_ready", round=r, seconds=round(time.monotonic() - start, 2))
    table = placement_group_table()
    not_created = [g.id.hex() for g in groups if table[g.id.hex()]["state"] != "CREATED"]
    if not_created:
        violations.append(f"{len(not_created)} groups not CREATED: {not_created[:5]}")
    expected = sum(BUNDLE_CPU * len(g.bundle_specs) for g in groups)
    if not wait_for(lambda: abs(cpu_in_use(total_cpu) - expected) < 1e-6):
        violations.append(f"CPU in use {cpu_in_use(total_cpu):.4f}, bundles hold {expected:.4f}")
    for g in groups:
        remove_placement_group(g)
    emit("pgs_removed", round=r, seconds=round(time.monotonic() - start, 2))


def run_actors(r: int, m: int, violations: list[str]) -> list[Any]:
    """One round of actors (see the module docstring); returns them, all killed."""
    start = time.monotonic()
    actors = []
    for i in range(m):
        options: dict[str, Any] = {}
        if i % 10 == 0:
            options = {"name": f"detached{r}-{i}", "lifetime": "detached"}
        elif i % 10 == 1:
            options = {"name": f"named{r}-{i}"}
        actors.append(Member.options(**options).remote(i))
    answers = ray.get([a.ping.remote() for a in actors], timeout=SETTLE_S * 5)
    if answers != list(range(m)):
        violations.append("actors answered wrongly")
    emit("actors_answered", round=r, seconds=round(time.monotonic() - start, 2))
    for i in range(0, m, 10):
        if ray.get(ray.get_actor(f"detached{r}-{i}").ping.remote(), timeout=SETTLE_S) != i:
            violations.append(f"detached{r}-{i} answered wrongly")
    for actor in actors:
        ray.kill(actor, no_restart=True)
    return actors


def check_settled(total_cpu: float, actors: list[Any], violations: list[str]) -> None:
    def groups_gone() -> bool:
        left = [k for k, v in placement_group_table().items() if v["state"] != "REMOVED"]
        bundles = [k for k in ray.available_resources() if "_group_" in k]
        return not left and not bundles

    if not wait_for(groups_gone):
        violations.append("placement groups or bundle resources left after removal")
    if not wait_for(lambda: abs(cpu_in_use(total_cpu)) < 1e-6):
        violations.append(f"CPU in use {cpu_in_use(total_cpu):.4f} with nothing left")
    states = {bytes.fromhex(k): v["State"] for k, v in ray._private.state.actors().items()}
    dead = sum(states.get(a._actor_id.binary()) == "DEAD" for a in actors)
    if dead != len(actors):
        violations.append(f"{dead} of {len(actors)} killed actors DEAD")


class Commands(threading.Thread):
    """Reads stdin: `stop` (finish this round), `churn_stopped` (check now)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.churn_stopped = threading.Event()

    def run(self) -> None:
        for line in sys.stdin:
            {"stop": self.stop, "churn_stopped": self.churn_stopped}[line.strip()].set()
        self.stop.set()  # stdin closed: the orchestrator is gone
        self.churn_stopped.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--pgs", type=int, default=200, help="per round")
    parser.add_argument("--actors", type=int, default=10, help="per round")
    args = parser.parse_args()
    ray.init(address=args.address, _node_ip_address=args.host, namespace=NAMESPACE,
             logging_level="warning")  # fmt: skip
    commands = Commands()
    commands.start()
    total_cpu = float(ray.cluster_resources()["CPU"])
    violations: list[str] = []
    actors: list[Any] = []
    rounds = 0
    while not commands.stop.is_set():
        rounds += 1
        run_pgs(rounds, args.pgs, total_cpu, violations)
        actors += run_actors(rounds, args.actors, violations)
        emit("round_done", round=rounds)
    emit("workload_done", rounds=rounds)
    commands.churn_stopped.wait()
    check_settled(total_cpu, actors, violations)
    emit("checked", violations=violations)


if __name__ == "__main__":
    main()
