"""A real Ray Serve application keeps answering HTTP requests while the gcs-ha leader is
killed five times (issue 12, item 6).

Real processes: a 3-replica gcs-ha cluster on 127.0.0.2 (ports 15000-15012), a head node
with the dashboard from `gcs-ha ray-head` (15100-15399), one driver that deploys a Serve
application and exits (Serve's controller, proxy and replicas stay: they belong to Serve's
detached controller), Serve's HTTP proxy on 127.0.0.2:15050, its replicas' gRPC servers on
15400-15499 (see DEPLOY). The application is two deployments of two replicas each: the
ingress answers HTTP and calls the other through a deployment handle, so both Serve's
HTTP routing and its handle routing are exercised.

This process sends a request every 25 ms (5 s timeout each) from a thread, for the whole
run, and checks every answer. Five times the serving leader is killed with SIGKILL, a new
one is awaited, the killed replica is started again (the next kill needs a majority), and
`serve status` must show the application RUNNING and its deployments HEALTHY. At the end:
no request failed, and Serve's controller, proxy and replica actors are the same actors
(id, pid, restart count) as before the first kill, all alive, and every replica answered.

When the leader killed is the replica whose address the head was given (as likely as
not), Ray's processes have no GCS until that replica is back, a few seconds; the requests
do not need the GCS and keep being answered.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gcs_ha.errors import GcsHaError
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import (
    RAY_ENV,
    last_json,
    ray_head_command,
    ray_on_gcs_ha,
    venv_cli,
    wait_for_dashboard,
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.2"
GCS_PORT, RAFT_PORT = 15000, 15010
HTTP_PORT, GRPC_PORT = 15050, 15051
REPLICA_GRPC_PORTS = (15400, 15499)  # the replicas' inter-deployment gRPC servers
DASHBOARD = f"http://{HOST}:15107"
APP, ROUTE = "calc", "/calc"
KILLS = 5
REQUEST_PERIOD_S = 0.025
REQUEST_TIMEOUT_S = 5.0
KILL_GAP_S = 3.0  # at least this long between a restart and the next kill
ENV = {**os.environ, **RAY_ENV}

# Deploys the application and exits. argv: GCS address, host, HTTP port, gRPC port, the
# first and last port of the replicas' inter-deployment gRPC servers, a lock file.
# Each Serve replica also serves gRPC for inter-deployment calls, bound by Ray 2.60 to
# "[::]:0" (a random port on every interface) with no option to change it; `pin_port`
# (called first in each replica's constructor, which runs before that server is bound)
# makes it bind on HOST to a free port of the test's range instead. Ray's gRPC servers
# set SO_REUSEPORT, so a port is chosen free by a plain bind, under a lock shared by the
# replicas of this machine.
DEPLOY = """
import fcntl, json, os, socket, sys
import ray
from ray import serve

HOST, FIRST, LAST, LOCK = sys.argv[2], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]

def pin_port():
    import ray.serve._private.replica as replica
    ray_bind = replica.add_port_to_grpc_server

    def bind(server, address):
        if address != "[::]:0":
            return ray_bind(server, address)
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for port in range(FIRST, LAST + 1):
                with socket.socket() as probe:
                    try:
                        probe.bind((HOST, port))
                    except OSError:
                        continue
                bound = ray_bind(server, f"{HOST}:{port}")
                assert bound == port, (bound, port)
                return bound
        raise RuntimeError(f"no free port in {FIRST}-{LAST}")

    replica.add_port_to_grpc_server = bind

@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5})
class Adder:
    def __init__(self):
        pin_port()

    def add(self, n):
        return {"sum": n + 1, "adder": os.getpid()}

@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5})
class Ingress:
    def __init__(self, adder):
        pin_port()
        self.adder = adder

    async def __call__(self, request):
        n = int(request.query_params["n"])
        reply = await self.adder.add.remote(n)
        return {**reply, "n": n, "ingress": os.getpid()}

ray.init(address=sys.argv[1])
serve.start(
    http_options={"host": HOST, "port": int(sys.argv[3])},
    grpc_options={"port": int(sys.argv[4])},
)
serve.run(Ingress.bind(Adder.bind()), name="calc", route_prefix="/calc")
print(json.dumps({"deployed": True}), flush=True)
"""


@dataclass
class Request:
    sent: float  # time.monotonic()
    latency: float
    error: str | None
    ingress: int = 0
    adder: int = 0


@dataclass
class Load:
    """Sends GET /calc?n=i every REQUEST_PERIOD_S from a thread; records every answer."""

    url: str
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            n += 1
            self.requests.append(self.one(n))
            next_at = max(next_at + REQUEST_PERIOD_S, time.monotonic())
            self.stop.wait(next_at - time.monotonic())

    def one(self, n: int) -> Request:
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(f"{self.url}?n={n}", timeout=REQUEST_TIMEOUT_S) as r:
                status, body = r.status, r.read()
            reply = json.loads(body)
            if status != 200 or reply.get("n") != n or reply.get("sum") != n + 1:
                return Request(sent, time.monotonic() - sent, f"{status}: {body[:200]!r}")
            return Request(sent, time.monotonic() - sent, None, reply["ingress"], reply["adder"])
        except Exception as exc:  # any failure counts, whatever it is
            return Request(sent, time.monotonic() - sent, f"{type(exc).__name__}: {exc}")

    def around(self, start: float, end: float) -> list[Request]:
        return [r for r in list(self.requests) if start <= r.sent <= end]


@dataclass
class Kill:
    """One leader kill and what followed, in seconds after it."""

    killed: int
    head_replica: bool  # the replica whose address the head node was given
    at: float  # time.monotonic()
    new_leader: int = -1
    elected_s: float = 0.0
    rejoined_s: float = 0.0  # the killed replica, started again, knows the leader
    status_s: float = 0.0  # `serve status` answered
    unhealthy: list[str] = field(default_factory=list)

    def report(self, start: float, near: list[Request]) -> str:
        lat = [r.latency * 1000 for r in near]
        answered = sorted(r.sent + r.latency for r in near if r.error is None)
        gap = max(b - a for a, b in itertools.pairwise(answered)) * 1000
        return (
            f"kill r{self.killed} (the head's replica: {self.head_replica}) at "
            f"{self.at - start:.1f} s: r{self.new_leader} leads after {self.elected_s:.2f} s, "
            f"r{self.killed} back after {self.rejoined_s:.2f} s, serve status healthy after "
            f"{self.status_s:.2f} s; from 1 s before to 5 s after: {len(near)} requests, "
            f"latency median {statistics.median(lat):.1f} ms, max {max(lat):.1f} ms, "
            f"longest time without an answer {gap:.0f} ms"
        )


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=ENV, timeout=timeout
    )


def serve_status() -> dict[str, Any]:
    """What `serve status` prints, parsed; AssertionError if it fails."""
    out = run(venv_cli("serve", "status", f"--address={DASHBOARD}"))
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    status: dict[str, Any] = yaml.safe_load(out.stdout)
    return status


def unhealthy(status: dict[str, Any]) -> list[str]:
    """What is not healthy in a `serve status`: [] when the application runs, both its
    deployments are healthy with two running replicas each, and every proxy is healthy."""
    app = (status.get("applications") or {}).get(APP)
    if app is None:
        return [f"no application {APP}: {status}"]
    bad = [] if app["status"] == "RUNNING" else [f"application {app['status']}"]
    deployments = app.get("deployments") or {}
    if sorted(deployments) != ["Adder", "Ingress"]:
        bad.append(f"deployments {sorted(deployments)}")
    for name, dep in deployments.items():
        if dep["status"] != "HEALTHY" or dep.get("replica_states") != {"RUNNING": 2}:
            bad.append(f"{name}: {dep}")
    proxies = status.get("proxies") or {}
    if not proxies or set(proxies.values()) != {"HEALTHY"}:
        bad.append(f"proxies {proxies}")
    return bad


def serve_actors() -> dict[str, dict[str, Any]]:
    """Serve's actors (namespace "serve", alive or not) by actor id, from `ray list`."""
    cmd = venv_cli("ray", "list", "actors", "--detail", "--format=json", "--limit=1000")
    out = run([*cmd, f"--address={DASHBOARD}"])
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    actors = json.loads(out.stdout)
    return {a["actor_id"]: a for a in actors if a.get("ray_namespace") == "serve"}


def rejoined(gcs: ProcessCluster, i: int) -> bool | None:
    """Whether replica i answers and knows the leader (None if not)."""
    try:
        return bool(gcs.status(i, timeout=1.0).leader_node_id) or None
    except GcsHaError:
        return None


def summary(actors: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str, int, int]]:
    """actor id -> (class, state, pid, restarts)."""
    return {
        aid: (a["class_name"], a["state"], a["pid"], a["num_restarts"])
        for aid, a in sorted(actors.items())
    }


def test_serve_answers_every_request_across_five_leader_kills(tmp_path: Path) -> None:
    load = Load(f"http://{HOST}:{HTTP_PORT}{ROUTE}")
    sender = threading.Thread(target=load.run, daemon=True)
    with ray_on_gcs_ha(tmp_path, GCS_PORT, RAFT_PORT, HOST, "ghv-") as env:
        gcs, ray, address = env.gcs, env.ray, env.address
        follower = next(i for i in sorted(gcs.members) if gcs.gcs_address(i) == address)
        try:
            ray.start(
                "head",
                ray_head_command(
                    env.address, env.temp_dir, HOST, 15100, num_cpus=4, dashboard=True
                ),
            )
            wait_for_dashboard(DASHBOARD)
            ports = [str(p) for p in (HTTP_PORT, GRPC_PORT, *REPLICA_GRPC_PORTS)]
            deploy = ray.driver(DEPLOY, address, HOST, *ports, str(tmp_path / "ports.lock"))
            assert last_json(deploy, timeout=240) == {"deployed": True}
            wait_until(lambda: unhealthy(serve_status()) == [] or None, 60, "Serve not healthy")
            before = summary(serve_actors())
            classes = sorted(c for c, *_ in before.values())
            assert classes == [
                "ProxyActor",
                "ServeController",
                *["ServeReplica:calc:Adder"] * 2,
                *["ServeReplica:calc:Ingress"] * 2,
            ], before
            assert all(s == "ALIVE" for _, s, _, _ in before.values()), before

            sender.start()
            wait_until(lambda: len(load.requests) >= 40 or None, 30, "no requests sent")
            kills: list[Kill] = []
            restarted_at = time.monotonic()
            for _ in range(KILLS):
                time.sleep(max(0.0, restarted_at + KILL_GAP_S - time.monotonic()))
                killed = gcs.wait_for_leader(timeout=30)
                kill = Kill(killed, killed == follower, time.monotonic())
                gcs.kill(killed)
                kill.new_leader = gcs.wait_for_leader(timeout=60, exclude=[killed])
                kill.elected_s = time.monotonic() - kill.at
                gcs.restart(killed)
                wait_until(lambda k=killed: rejoined(gcs, k), 60, f"r{killed} did not rejoin")
                restarted_at = time.monotonic()
                kill.rejoined_s = restarted_at - kill.at
                kill.unhealthy = unhealthy(serve_status())
                kill.status_s = time.monotonic() - kill.at
                kills.append(kill)
                assert kill.unhealthy == [], kill
            time.sleep(KILL_GAP_S)  # requests after the last kill count too
            load.stop.set()
            sender.join(timeout=REQUEST_TIMEOUT_S + 5)
            after = summary(serve_actors())

            requests = load.requests
            failures = [r for r in requests if r.error is not None]
            latencies = [r.latency for r in requests]
            print(f"\n{len(requests)} requests, {len(failures)} failed")
            print(
                f"latency median {statistics.median(latencies) * 1000:.1f} ms, "
                f"max {max(latencies) * 1000:.1f} ms"
            )
            start = requests[0].sent
            for k in kills:
                print(k.report(start, load.around(k.at - 1.0, k.at + 5.0)))
            print(f"Serve actors before: {before}")
            print(f"Serve actors after:  {after}")
            for r in failures[:20]:
                print(f"failed at {r.sent - start:.2f} s after {r.latency:.2f} s: {r.error}")

            assert failures == [], f"{len(failures)} of {len(requests)} requests failed"
            assert after == before, "Serve's actors changed"
            replicas = {c: {p for k, _, p, _ in before.values() if k == c} for c in classes}
            answered_by = {r.ingress for r in requests}, {r.adder for r in requests}
            expected = replicas["ServeReplica:calc:Ingress"], replicas["ServeReplica:calc:Adder"]
            assert answered_by == expected, "not every replica answered (or an unknown one did)"
        finally:
            load.stop.set()
