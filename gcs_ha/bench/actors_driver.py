"""The Ray driver of `gcs-ha bench actors`: `python -m gcs_ha.bench.actors_driver`.

It imports Ray, so it runs in its own process and imports nothing from gcs_ha (Ray's and
gcs-ha's generated protos define the same protobuf symbols). It runs the actors, pgs and
memory steps, printing one JSON event per line on stdout and reading `go N` lines on
stdin; the protocol is in DESIGN.md ("Mechanism: actors"). A failure ends the process with
a traceback on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

ACTOR_CPU = 0.01  # per actor, as Ray's many_actors gives each a fraction of a CPU
BUNDLE = {"CPU": 0.001}
MISSING_RESOURCE = "gcs_ha_bench_no_node_has_this"
TIMEOUT_S = 600.0
POLL_S = 0.05


@ray.remote(num_cpus=ACTOR_CPU, max_restarts=1, max_task_retries=1)
class Small:
    """One of the many actors: a worker process of its own, one trivial method.

    Restarted once if its worker dies: Ray 2.60's workers now and then die of SIGSEGV
    (in getenv) while starting, which would otherwise end the whole run."""

    def ping(self) -> int:
        return 1


@ray.remote(num_cpus=0, resources={MISSING_RESOURCE: 1})
class Pending:
    """An actor no node can host: registered in the GCS, never started."""


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), flush=True)


def result(op: str, count: int, seconds: float) -> None:
    emit("result", op=op, count=count, seconds=round(seconds, 4))


def actor_states() -> dict[str, str]:
    """hex actor id -> state, of this job's actors, from the GCS."""
    job = ray.get_runtime_context().get_job_id()
    table = ray._private.state.actors(job_id=ray.JobID.from_hex(job))
    return {actor_id: info["State"] for actor_id, info in table.items()}


def until(probe: Any, what: str) -> None:
    """Poll `probe()` until true; RuntimeError after TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def run_actors(n: int) -> None:
    """Create n actors, wait for one call each; kill them, wait for DEAD."""
    t0 = time.monotonic()
    actors = [Small.remote() for _ in range(n)]  # type: ignore[attr-defined]
    assert ray.get([a.ping.remote() for a in actors], timeout=TIMEOUT_S) == [1] * n
    result("actors", n, time.monotonic() - t0)
    ids = {a._actor_id.hex() for a in actors}
    t0 = time.monotonic()
    for actor in actors:
        ray.kill(actor)

    def all_dead() -> bool:
        states = actor_states()
        return all(states.get(i) == "DEAD" for i in ids)

    until(all_dead, "the killed actors to be DEAD")
    result("actors_kill", n, time.monotonic() - t0)


def run_pgs(m: int) -> None:
    """Create m one-bundle placement groups, wait ready; remove them, wait REMOVED."""
    t0 = time.monotonic()
    pgs = [placement_group([dict(BUNDLE)], strategy="PACK") for _ in range(m)]
    ray.get([pg.ready() for pg in pgs], timeout=TIMEOUT_S)
    result("pgs_create", m, time.monotonic() - t0)
    ids = {pg.id.hex() for pg in pgs}
    t0 = time.monotonic()
    for pg in pgs:
        remove_placement_group(pg)

    def all_removed() -> bool:
        table = placement_group_table()
        return all(table.get(i, {}).get("state") == "REMOVED" for i in ids)

    until(all_removed, "the removed placement groups to be REMOVED")
    result("pgs_remove", m, time.monotonic() - t0)


def run_memory(k: int) -> None:
    """Register k pending actors, a batch per `go N` line on stdin; keep them all until
    stdin closes."""
    emit("memory_ready", job_id=ray.get_runtime_context().get_job_id())
    pending: list[Any] = []
    t0 = 0.0
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[0] != "go":
            break
        n = min(int(words[1]), k - len(pending))
        t0 = t0 or time.monotonic()
        pending += [Pending.remote() for _ in range(n)]  # type: ignore[attr-defined]
        emit("memory_submitted", t0=t0, count=len(pending))


def warm_up() -> None:
    """One actor and one placement group, so both systems start measured work warm
    (the actor class exported, a worker started, the scheduler's first round done)."""
    actor = Small.remote()  # type: ignore[attr-defined]
    ray.get(actor.ping.remote(), timeout=TIMEOUT_S)
    ray.kill(actor)
    pg = placement_group([dict(BUNDLE)])
    ray.get(pg.ready(), timeout=TIMEOUT_S)
    remove_placement_group(pg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gcs_ha.bench.actors_driver")
    parser.add_argument("--address", required=True, help="the GCS address, HOST:PORT")
    parser.add_argument("--node-ip", required=True, help="this node's IP, as the head's")
    parser.add_argument("--actors", type=int, default=0)
    parser.add_argument("--pgs", type=int, default=0)
    parser.add_argument("--memory-actors", type=int, default=0)
    args = parser.parse_args(argv)
    ray.init(
        address=args.address,
        _node_ip_address=args.node_ip,
        namespace="gcs_ha_bench",
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    warm_up()
    emit("ready")
    if args.actors:
        run_actors(args.actors)
    if args.pgs:
        run_pgs(args.pgs)
    if args.memory_actors:
        run_memory(args.memory_actors)
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
