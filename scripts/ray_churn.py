"""Ray workloads through leadership churn: placement groups and actors on a fresh
3-replica gcs-ha cluster while its leadership keeps moving.

    python scripts/ray_churn.py --events 40 --pgs 300 --actors 10 --seed 1

Starts the cluster and a Ray head the way `gcs-ha bench actors` does (127.0.0.5, ports
from --base-port), then runs `ray_churn_driver.py` as the Ray driver, which repeats
rounds of placement groups and actors (created, checked, removed or killed). Meanwhile
a churn thread acts every --period seconds on the serving leader: with probability
--kill-fraction it SIGKILLs it and restarts it --restart-after seconds later, otherwise
it transfers leadership to a random other replica. The replica the raylet and the driver
were pointed at (the first leader) is never killed, only moved away from: Ray's clients
reconnect to the address they were given. After --events acts the driver finishes its
round, the churn stops, and the driver checks that everything settled.

Keep --period above 2 s: a new leader schedules placement groups only once the raylet's
resource view reached it, and the raylet reopens its syncer stream every 2 s; moved
faster than that, leadership never holds a view long enough to place anything.

Prints the driver's events as they come and a JSON report last; exits 0 when the driver
found nothing wrong, 1 otherwise. The checks live in the driver (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gcs_ha.bench.actors_systems import HOST, start_system
from gcs_ha.errors import GcsHaError
from gcs_ha.testing.cluster import ProcessCluster

DRIVER = Path(__file__).with_name("ray_churn_driver.py")


class Churn(threading.Thread):
    """Moves leadership every `period` seconds until `stop()`; counts what it did."""

    def __init__(
        self,
        cluster: ProcessCluster,
        entry: int,
        args: argparse.Namespace,
        enough: Callable[[], None],
    ) -> None:
        """`enough()` is called once, after the --events-th act."""
        super().__init__(name="churn", daemon=True)
        self._cluster = cluster
        self._entry = entry
        self._args = args
        self._enough: Callable[[], None] | None = enough
        self._rng = random.Random(args.seed)
        self._halt = threading.Event()
        self.counts: Counter[str] = Counter()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        while not self._halt.wait(self._args.period):
            leader = self._cluster.serving_leader()
            if leader is None:
                self.counts["no_leader"] += 1
            elif leader != self._entry and self._rng.random() < self._args.kill_fraction:
                self._kill_and_restart(leader)
            else:
                self._transfer(leader)
            if self._enough is not None and self.counts.total() >= self._args.events:
                self._enough()
                self._enough = None

    def _kill_and_restart(self, leader: int) -> None:
        self._cluster.kill(leader)
        self.counts["kill"] += 1
        self._halt.wait(self._args.restart_after)
        self._cluster.restart(leader)

    def _transfer(self, leader: int) -> None:
        target = self._rng.choice([i for i in range(3) if i != leader])
        try:
            with self._cluster.admin(leader, timeout=5.0) as admin:
                admin.transfer_leadership(self._cluster.node_id(target))
            self.counts["transfer"] += 1
        except GcsHaError:  # e.g. the target was just killed and is restarting
            self.counts["transfer_failed"] += 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20, help="churn acts before the end")
    parser.add_argument("--pgs", type=int, default=200, help="placement groups per round")
    parser.add_argument("--actors", type=int, default=10, help="actors per round")
    parser.add_argument("--period", type=float, default=2.5, help="seconds between acts")
    parser.add_argument("--kill-fraction", type=float, default=0.3)
    parser.add_argument("--restart-after", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--base-port", type=int, default=25000, help="uses BASE..BASE+499")
    parser.add_argument("--data-dir", type=Path, default=None, help="parent of the run dir")
    parser.add_argument("--timeout", type=float, default=900.0, help="for the whole run")
    return parser.parse_args()


def run(args: argparse.Namespace) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="ray-churn-", dir=args.data_dir))
    temp = Path(tempfile.mkdtemp(prefix="gha-rc-", dir="/tmp"))  # Ray's sockets: short
    try:
        with start_system("gcs-ha-3", base, args.base_port, args.num_cpus, temp) as system:
            assert system.cluster is not None
            entry = next(i for i in range(3) if system.cluster.gcs_address(i) == system.address)
            driver = subprocess.Popen(
                [sys.executable, str(DRIVER), f"--address={system.address}", f"--host={HOST}",
                 f"--pgs={args.pgs}", f"--actors={args.actors}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            churn = Churn(system.cluster, entry, args, lambda: tell(driver, "stop"))
            timer = threading.Timer(args.timeout, driver.kill)
            timer.daemon = True
            try:
                timer.start()
                churn.start()
                events = follow(driver, churn)
                code = driver.wait()
            finally:
                timer.cancel()
                driver.kill()
                if churn.is_alive():
                    churn.stop()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    final = events[-1] if events else {}
    phases: dict[str, list[object]] = {}
    for event in events:
        if "seconds" in event:
            phases.setdefault(str(event["event"]), []).append(event["seconds"])
    return {
        "ok": code == 0 and final.get("event") == "checked" and not final.get("violations"),
        "driver_exit_code": code,
        "churn": dict(churn.counts),
        "rounds": next((e["rounds"] for e in events if e["event"] == "workload_done"), 0),
        "violations": final.get("violations", ["the driver ended before its checks"]),
        "phases": phases,
        "data_dir": str(base),
    }


def tell(driver: subprocess.Popen[str], command: str) -> None:
    assert driver.stdin is not None
    try:
        driver.stdin.write(command + "\n")
        driver.stdin.flush()
    except OSError:  # the driver is gone; its exit code tells
        pass


def follow(driver: subprocess.Popen[str], churn: Churn) -> list[dict[str, object]]:
    """Echo the driver's events; stop the churn when its workload is done."""
    assert driver.stdout is not None
    events = []
    for line in driver.stdout:
        event = json.loads(line)
        events.append(event)
        print(json.dumps(event), flush=True)
        if event["event"] == "workload_done":
            churn.stop()
            time.sleep(1.0)  # let the last restarted replica catch up
            tell(driver, "churn_stopped")
    return events


def main() -> None:
    report = run(parse_args())
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
