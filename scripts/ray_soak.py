"""A user's Ray workload while the gcs-ha leader is killed and brought back, timed step by
step: where does the time go around a failover?

    python scripts/ray_soak.py --seconds 120 --period 30 [--system gcs-ha-3|ray-memory]

Starts the cluster and a Ray head the way `gcs-ha bench actors` does (127.0.0.5, ports
from --base-port), then runs `ray_soak_driver.py`, which loops over 50 tasks, an actor
(created, called, killed), a placement group (created, ready, removed) and a KV put and
get, timing each step. Every --period seconds the serving leader is killed with SIGKILL
and started again --restart-after seconds later. The replica the raylet and the driver
were pointed at is never killed (Ray's clients reconnect to the address they were
given): when it leads, leadership is first transferred away and the new leader killed.
`--system ray-memory` runs the same workload on Ray's own gcs_server without kills, as a
baseline.

Prints a JSON report: per step, its median when no kill is near ("quiet": the step
neither overlaps nor starts within --window seconds after a kill), the slowest step
that does ("around kills"), and the excess of that over the quiet median; every error;
the time each kill took to elect another leader; whether the head's raylet is the same
process at the end. Exits 0 when no step failed and the raylet never restarted; Ray's
logs are kept when a step failed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gcs_ha.bench.actors_systems import start_system
from gcs_ha.errors import GcsHaError
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.sessions import alive

DRIVER = Path(__file__).with_name("ray_soak_driver.py")


class Killer(threading.Thread):
    """Kills the serving leader every `period` seconds (never `entry`), restarting it."""

    def __init__(self, cluster: ProcessCluster, entry: int, args: argparse.Namespace) -> None:
        super().__init__(name="killer", daemon=True)
        self._cluster, self._entry, self._args = cluster, entry, args
        self._halt = threading.Event()
        self.kills: list[float] = []
        self.elections: list[float] = []  # kill -> another replica serves, s
        self.problems: list[str] = []

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        while not self._halt.wait(self._args.period):
            try:
                self._kill_once()
            except GcsHaError as exc:
                self.problems.append(f"{time.monotonic():.1f}: {exc}")

    def _kill_once(self) -> None:
        leader = self._cluster.wait_for_leader(timeout=30)
        if leader == self._entry:
            target = next(i for i in sorted(self._cluster.members) if i != self._entry)
            with self._cluster.admin(leader, timeout=5.0) as admin:
                admin.transfer_leadership(self._cluster.node_id(target))
            leader = self._cluster.wait_for_leader(timeout=30, exclude=[self._entry])
        killed_at = time.monotonic()
        self.kills.append(killed_at)
        self._cluster.kill(leader)
        self._cluster.wait_for_leader(timeout=30, exclude=[leader])
        self.elections.append(time.monotonic() - killed_at)
        self._halt.wait(self._args.restart_after)
        self._cluster.restart(leader)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="gcs-ha-3", choices=["gcs-ha-3", "ray-memory"])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the loop runs")
    parser.add_argument("--period", type=float, default=30.0, help="seconds between kills")
    parser.add_argument("--restart-after", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0, help="a kill's aftermath, s")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--base-port", type=int, default=25000, help="uses BASE..BASE+499")
    parser.add_argument("--keep-logs", action="store_true", help="keep Ray's logs anyway")
    return parser.parse_args()


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="ray-soak-"))
    temp = Path(tempfile.mkdtemp(prefix="gha-rs-", dir="/tmp"))  # Ray's sockets: short
    events: list[dict[str, Any]] = []
    killer: Killer | None = None
    raylet_alive = False
    try:
        with start_system(args.system, base, args.base_port, args.num_cpus, temp) as system:
            cmd = [sys.executable, str(DRIVER), f"--address={system.address}"]
            driver = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert driver.stdout is not None and driver.stdin is not None
                assert json.loads(driver.stdout.readline())["event"] == "ready"
                if system.cluster is not None:
                    cluster = system.cluster
                    entry = next(i for i in range(3) if cluster.gcs_address(i) == system.address)
                    killer = Killer(cluster, entry, args)
                    killer.start()
                stop = threading.Timer(args.seconds, lambda: tell_stop(driver))
                stop.start()
                events = [json.loads(line) for line in driver.stdout if line.startswith("{")]
                stop.cancel()
                raylet_pid = system.watched["raylet"][0]
                raylet_alive = alive(raylet_pid)  # the same raylet process all along
                if killer is not None:
                    killer.stop()
                driver.wait(timeout=60)
            finally:
                driver.kill()
    finally:
        kept = args.keep_logs or not events or any(e["event"] == "error" for e in events)
        if not kept:
            shutil.rmtree(temp, ignore_errors=True)
    kills = killer.kills if killer is not None else []
    report = summarize(events, kills, args.window)
    report.update(system=args.system, data_dir=str(base), raylet_alive=raylet_alive)
    report["ok"] = report["ok"] and raylet_alive
    if kept:
        report["ray_logs"] = str(temp)
    report["killer_problems"] = killer.problems if killer is not None else []
    report["elections_s"] = [round(e, 3) for e in killer.elections] if killer else []
    report["actor_details_around_kills"] = [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in e.items()}
        for e in events
        if e["event"] == "detail"
        and near_kill(e["start"], 0.0, kills, args.window) is not None
        and e["register_s"] + e["create_and_call_s"] > 1.0
    ]
    return report


def tell_stop(driver: subprocess.Popen[str]) -> None:
    try:
        assert driver.stdin is not None
        driver.stdin.write("stop\n")
        driver.stdin.flush()
    except OSError:
        pass


def near_kill(start: float, seconds: float, kills: list[float], window: float) -> float | None:
    """The kill a step overlaps or follows within `window`, if any."""
    for kill in kills:
        if start <= kill + window and start + seconds >= kill:
            return kill
    return None


def summarize(events: list[dict[str, Any]], kills: list[float], window: float) -> dict[str, Any]:
    steps: dict[str, dict[str, list[float]]] = {}
    worst: dict[str, tuple[float, float]] = {}
    for event in events:
        if event["event"] != "step":
            continue
        name, start, seconds = event["step"], event["start"], event["seconds"]
        kill = near_kill(start, seconds, kills, window)
        kind = "quiet" if kill is None else "around_kills"
        steps.setdefault(name, {"quiet": [], "around_kills": []})[kind].append(seconds)
        if kill is not None and seconds > worst.get(name, (0.0, 0.0))[0]:
            worst[name] = (seconds, start - kill)
    out: dict[str, Any] = {}
    for name, kinds in steps.items():
        quiet = kinds["quiet"]
        median = statistics.median(quiet) if quiet else None
        row: dict[str, Any] = {"quiet_n": len(quiet), "quiet_median_s": _r(median)}
        row["quiet_max_s"] = _r(max(quiet)) if quiet else None
        around = kinds["around_kills"]
        row["around_kills_n"] = len(around)
        if around:
            row["around_kills_max_s"] = _r(max(around))
            row["worst_started_after_kill_s"] = _r(worst[name][1])
            if median is not None:
                row["excess_s"] = _r(max(around) - median)
        out[name] = row
    errors = [e for e in events if e["event"] == "error"]
    done = next((e for e in events if e["event"] == "done"), {})
    return {
        "ok": not errors and bool(done),
        "iterations": done.get("iterations"),
        "kills": len(kills),
        "steps": out,
        "errors": errors,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main() -> None:
    report = run(parse_args())
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
