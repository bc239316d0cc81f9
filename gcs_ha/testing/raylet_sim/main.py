"""`python -m gcs_ha.testing.raylet_sim`: N simulated raylets in one process, steered by
command lines on stdin (probe, actors, pgs, dead, stats, failover, calls), answering with
one JSON line each on stdout; the protocol is in ../DESIGN.md ("The raylet simulator").
A failing command answers an "error" event; stdin closing ends the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from gcs_ha.testing.raylet_sim import workload
from gcs_ha.testing.raylet_sim.fleet import Fleet, FleetConfig

log = logging.getLogger("raylet_sim")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def own_usage() -> dict[str, float]:
    """This process's RSS (MiB) and CPU seconds so far."""
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    times = os.times()
    return {"rss_mib": round(rss / 1024, 1), "cpu_s": round(times.user + times.system, 2)}


async def failover(fleet: Fleet, t_kill: float, timeout_s: float = 60.0) -> dict[str, Any]:
    """Seconds after `t_kill` until every view is visible, and until a new actor is up."""
    gcs = fleet.stubs_for(len(fleet.nodes) - 1)

    async def views() -> float | None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                if await workload.views_match(fleet, gcs) == 0:
                    return time.monotonic() - t_kill
            except Exception:
                pass
            await asyncio.sleep(0.02)
        return None

    async def actor() -> float | None:
        # 0 CPU: its lease changes no view, so `views` waits for the views as of the kill
        spec = workload.actor_spec(fleet, fleet.job_id or b"\x01\x00\x00\x00", cpu=0.0)
        await workload.create_actor(gcs, spec, deadline_s=timeout_s)
        return time.monotonic() - t_kill

    views_s, actor_s = await asyncio.gather(views(), actor())
    return {"views_s": views_s, "actor_s": actor_s}


async def run_command(fleet: Fleet, words: list[str]) -> None:
    name, args = words[0], words[1:]
    if name == "probe":
        delays = []
        for i in range(int(args[0])):
            node = random.choice(fleet.nodes)
            delay = await workload.probe(fleet, node, float(i + 1))
            if delay is not None:
                delays.append(round(delay, 5))
            await asyncio.sleep(0.05)
        emit("probe", delays=delays, lost=int(args[0]) - len(delays))
    elif name == "actors":
        seconds = await workload.create_actors(fleet, int(args[0]))
        emit("actors", count=int(args[0]), seconds=round(seconds, 3))
    elif name == "pgs":
        seconds = await workload.create_pgs(fleet, int(args[0]))
        emit("pgs", count=int(args[0]), seconds=round(seconds, 3))
    elif name == "dead":
        gcs_dead = await workload.dead_nodes(fleet)
        emit("dead", gcs_dead=gcs_dead, declared_dead=sum(n.declared_dead for n in fleet.nodes))
    elif name == "stats":
        emit("stats", **own_usage(), **fleet.totals())
    elif name == "failover":
        emit("failover", **await failover(fleet, float(args[0])))
    elif name == "calls":
        emit("calls", calls=fleet.nodes[0].counters.calls)
    else:
        raise ValueError(f"unknown command {name!r}")


async def serve(config: FleetConfig) -> None:
    fleet = Fleet(config)
    t0 = time.monotonic()
    try:
        await fleet.start()
        await workload.add_job(fleet)
        emit("ready", nodes=config.nodes, seconds=round(time.monotonic() - t0, 2), **own_usage())
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            words = line.split()
            if not words:
                continue
            try:
                await run_command(fleet, words)
            except Exception as exc:
                emit("error", command=line.strip(), error=f"{type(exc).__name__}: {exc}")
    finally:
        await fleet.stop()


def parse(argv: Sequence[str] | None) -> FleetConfig:
    parser = argparse.ArgumentParser(prog="python -m gcs_ha.testing.raylet_sim")
    parser.add_argument("--gcs", required=True, help="GCS address HOST:PORT (or a comma list)")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument(
        "--ip-prefix", default="127.1", help="nodes bind PREFIX.<i//250>.<i%%250+1>"
    )
    parser.add_argument("--port", type=int, default=33900, help="every node's port")
    parser.add_argument("--cpus", type=float, default=16.0)
    parser.add_argument("--nodes-per-channel", type=int, default=10)
    parser.add_argument("--view-changes-per-s", type=float, default=0.0)
    parser.add_argument("--task-events-per-s", type=float, default=100.0)
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.nodes_per_channel < 1:
        parser.error("--nodes and --nodes-per-channel must be >= 1")
    return FleetConfig(
        gcs_address=args.gcs,
        nodes=args.nodes,
        ip_prefix=args.ip_prefix,
        port=args.port,
        cpus=args.cpus,
        nodes_per_channel=args.nodes_per_channel,
        view_changes_per_s=args.view_changes_per_s,
        task_events_per_s=args.task_events_per_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s raylet_sim: %(message)s")  # fmt: skip
    asyncio.run(serve(parse(argv)))
    return 0
