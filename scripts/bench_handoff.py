"""The outage clients see across a SIGTERM of the leader, with the hand-off and without.

    python scripts/bench_handoff.py --rounds 5 [--modes handoff,plain] [--base-port 14040]
        [--keep DIR]

For each mode a 3-replica cluster of real `gcs-ha start` processes (`plain` runs them with
--handoff-timeout 0s: a leader stops without handing off, as before the hand-off).
Two clients write through r0, which forwards to the leader: Ray's own C++ GcsClient
(internal_kv_put in a loop, in a subprocess) and a gRPC InternalKVPut loop. Each round
waits for a steady cluster, moves leadership off r0 if it leads, sends SIGTERM to the
leader, waits for writes to succeed again, and starts the stopped replica again.
The outage of a round, per client: the longest gap between two successful calls from
the last one before the signal to 1 s after it (both modes have a leader again well
within that; a longer window only adds the shared machine's own pauses), and the calls
that failed in that second. `--modes handoff,plain,handoff,plain` interleaves runs.
Prints a JSON report: per run and client, the outages and failures; per mode and client,
the median outage over all its rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from gcs_ha.cluster_ops import HEALTHY, gather_status
from gcs_ha.errors import GcsHaError
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

AFTER_S = 1.0
RESTART_AFTER_S = 3.0  # the stopped replica is started again this long after the signal
SETTLE_S = 2.0  # steady writes before each signal
ENTRY = 0  # the replica both clients write through; never stopped
DUMP = os.environ.get("BENCH_HANDOFF_DUMP")  # a file for the raw logs (debugging)

RAY_LOOP = """
import json, os, sys, time
from ray._raylet import GcsClient
client = GcsClient(address=sys.argv[1])
print("started", flush=True)
log, n = [], 0
while not os.path.exists(sys.argv[2]):
    n += 1
    try:
        client.internal_kv_put(b"r%d" % n, b"v", True, b"bench", timeout=30)
        log.append((time.monotonic(), "OK"))
    except Exception as exc:
        log.append((time.monotonic(), repr(exc)[:200]))
    time.sleep(0.005)
print(json.dumps(log))
"""

Log = list[tuple[float, str]]  # (completion time, outcome)


class Writer(threading.Thread):
    """InternalKVPut through one replica as fast as it answers."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self._stub = pb_grpc.InternalKVGcsServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]
        self.halt = threading.Event()
        self.log: Log = []

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            request = pb.InternalKVPutRequest(namespace=b"bench", key=b"w%d" % n, value=b"v")
            try:
                self._stub.InternalKVPut(request, timeout=10)
                self.log.append((time.monotonic(), "OK"))
            except grpc.RpcError as exc:
                self.log.append((time.monotonic(), exc.code().name))
                time.sleep(0.005)


def outage(log: Log, t: float) -> float:
    """The longest gap between successful calls from the last one before `t` (the
    signal) to `t` + AFTER_S."""
    done = sorted(x for x, what in log if what == "OK" and x <= t + AFTER_S)
    before = [x for x in done if x <= t]
    times = [before[-1]] + [x for x in done if x > t] if before else done
    return max(b - a for a, b in itertools.pairwise(times))


def steady(cluster: ProcessCluster) -> int:
    """The serving leader, once every member answers and is caught up."""

    def probe() -> int | None:
        try:
            view = gather_status(cluster.gcs_address(ENTRY), timeout=1.0)
        except GcsHaError:
            return None
        if view.health() != HEALTHY or any((m.lag or 0) > 20 for m in view.members):
            return None
        return int(view.leader[1:]) if view.leader else None

    return wait_until(probe, 60, "the cluster did not settle")


def run_mode(mode: str, rounds: int, base: Path, port: int) -> dict[str, Any]:
    env = {"GCS_HA_HANDOFF_TIMEOUT": "0s"} if mode == "plain" else {}
    stops: list[float] = []
    with ProcessCluster(3, base / mode, port, port + 10, replica_env=lambda _: env) as cluster:
        cluster.start()
        steady(cluster)
        address = cluster.gcs_address(ENTRY)
        stop_file = base / f"{mode}.stop"
        ray = subprocess.Popen(
            [sys.executable, "-c", RAY_LOOP, address, str(stop_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ray.stdout is not None and ray.stdout.readline().strip() == "started"
        writer = Writer(address)
        writer.start()
        try:
            while len(stops) < rounds:
                leader = steady(cluster)
                if leader == ENTRY:
                    with cluster.admin(ENTRY) as admin:
                        admin.transfer_leadership("")
                    continue
                time.sleep(SETTLE_S)
                proc = cluster.process(leader)
                assert proc is not None
                stops.append(time.monotonic())
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
                time.sleep(RESTART_AFTER_S)
                cluster.start(leader)
            writer.halt.set()
            writer.join()
            stop_file.touch()
            out, _ = ray.communicate(timeout=120)
        finally:
            ray.kill()
    ray_log: Log = [(t, what) for t, what in json.loads(out.strip().splitlines()[-1])]
    if DUMP:
        Path(DUMP).write_text(json.dumps({"stops": stops, "ray": ray_log, "kv": writer.log}))
    return {
        "mode": mode,
        **{
            client: {
                "outages_s": [round(outage(log, t), 3) for t in stops],
                "failed": sum(
                    1
                    for x, what in log
                    if what != "OK" and any(t <= x <= t + AFTER_S for t in stops)
                ),
            }
            for client, log in zip(CLIENTS, (ray_log, writer.log), strict=True)
        },
    }


CLIENTS = ("ray_gcs_client", "grpc_kv")


def median_outage(runs: list[dict[str, Any]], mode: str, client: str) -> float:
    outages = [float(o) for r in runs if r["mode"] == mode for o in r[client]["outages_s"]]
    return round(statistics.median(outages), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="handoff,plain")
    parser.add_argument("--base-port", type=int, default=14040)
    parser.add_argument("--keep", type=Path, help="Keep data and replica logs in this dir.")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-handoff-") as tmp:
        base = args.keep or Path(tmp)
        for n, mode in enumerate(args.modes.split(",")):
            runs.append(run_mode(mode, args.rounds, base / str(n), args.base_port))
    medians = {
        mode: {client: median_outage(runs, mode, client) for client in CLIENTS}
        for mode in dict.fromkeys(r["mode"] for r in runs)
    }
    print(json.dumps({"runs": runs, "median_outage_s": medians}, indent=2))


if __name__ == "__main__":
    main()
