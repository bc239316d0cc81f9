"""Real Ray nodes and drivers for the real-Ray tests: started, found and killed by session.

Each node is started by one command (`ray start ...` or `gcs-ha ray-head ...`) in a
session of its own, which every process it starts inherits; its raylet is found among
the session's members, and `close` SIGKILLs every session (and every driver). Drivers are
`python -c script args` processes with stdin and stdout piped, stderr appended to
drivers.log. Ray is never imported here: only Ray's own processes import it.
`ray_on_gcs_ha` is the one harness of the real-Ray tests: a led 3-replica cluster, Ray's
processes on its followers, everything stopped at the end and Ray's logs kept on failure.

Errors: AssertionError when a node does not start (the test fails with its output).
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
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcs_ha.errors import UnavailableError
from gcs_ha.processes import gcs_ha_command, spawn
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.sessions import cmdline, exe_name, kill_sessions, session_members

RAY_ENV: Mapping[str, str] = {"RAY_USAGE_STATS_ENABLED": "0"}
KEEP_LOGS = "GCS_HA_KEEP_RAY_LOGS"  # set: keep Ray's temp dir even when all passed
START_TIMEOUT_S = 150.0
PORT_NAMES = ("node-manager", "object-manager", "metrics-export", "dashboard-agent-listen",
              "dashboard-agent-grpc", "runtime-env-agent")  # fmt: skip


def port_options(first: int, workers: range) -> list[str]:
    """`ray start` options that pin a node's ports: its services from `first` on, its
    workers in `workers` (tests run several nodes on one machine)."""
    ports = [f"--{name}-port={first + i}" for i, name in enumerate(PORT_NAMES)]
    return [*ports, f"--min-worker-port={workers.start}", f"--max-worker-port={workers[-1]}"]


@dataclass
class RayNode:
    """A node started by one command (its session) and its raylet."""

    name: str
    sid: int
    raylet_pid: int
    node_id: str  # hex
    output: str


@dataclass
class RayProcesses:
    """Starts Ray nodes and drivers (see the module doc); `env` is added to theirs."""

    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    starters: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    drivers: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], timeout: float = START_TIMEOUT_S) -> RayNode:
        """Run `cmd` until it exits 0, or, with --block, until it blocks; the node."""
        log = self.log_dir / f"{name}.log"
        proc = spawn(cmd, log, {**RAY_ENV, **self.env})
        self.starters[name] = proc

        def started() -> int | None:
            code = proc.poll()
            if code is None and "--block" in cmd:
                return 0 if "will now block" in log.read_text() else None
            return code

        try:
            code: int | None = wait_until(started, timeout, f"{name} did not start")
        except UnavailableError:
            code = None
        output = log.read_text()
        assert code == 0, f"{name}: {cmd} -> {code}\n{output[-3000:]}"
        raylets = [p for p in session_members(proc.pid) if Path(cmdline(p)[0]).name == "raylet"]
        assert len(raylets) == 1, f"{name}: raylets {raylets}"
        flags = dict(a.split("=", 1) for a in cmdline(raylets[0]) if "=" in a)
        return RayNode(name, proc.pid, raylets[0], flags["--node_id"], output)

    def kill_node(self, name: str) -> None:
        """SIGKILL node `name`'s raylet, then every process it started: a crashed machine.
        The raylet goes first: killed after one of its workers, it could still report that
        worker's death, and that actor would restart once for the worker and once more for
        the node (Ray counts both; a max_restarts=1 actor then dies, in Ray's GCS too)."""
        sid = self.starters[name].pid
        for pid in session_members(sid):
            if exe_name(pid) == "raylet":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        kill_sessions([sid])

    def kill_session(self, *sids: int) -> None:
        """SIGKILL every process of these sessions."""
        kill_sessions(list(sids), rounds=5, pause_s=0.5)

    def driver(
        self, script: str, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """A driver (`python -c script args`); `env` is added to the node environment."""
        with open(self.log_dir / "drivers.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", script, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **RAY_ENV, **self.env, **(env or {})},
            )
        self.drivers.append(proc)
        return proc

    def close(self) -> None:
        """SIGKILL every driver and every process of every session we started."""
        for driver in self.drivers:
            driver.kill()
            driver.wait()
        self.kill_session(*(proc.pid for proc in self.starters.values()))
        for proc in self.starters.values():
            proc.wait()  # reap them: killed above, or exited long ago


def last_json(proc: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    """The last JSON object a driver printed (a line starting with "{": Ray may print
    others); it must have exited 0."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"driver exited {proc.returncode}; see drivers.log"
    result: dict[str, Any] = json.loads([ln for ln in out.splitlines() if ln[:1] == "{"][-1])
    return result


def ray_head(address: str, *options: str) -> list[str]:
    """`gcs-ha ray-head --address=ADDRESS -- OPTIONS` (OPTIONS: `ray start`'s)."""
    return [*gcs_ha_command(), "ray-head", f"--address={address}", "--", *options]


def ray_worker(address: str, *options: str) -> list[str]:
    """`ray start --address=ADDRESS OPTIONS`: a worker node (this environment's Ray)."""
    return venv_cli("ray", "start", f"--address={address}", *options)


def ray_head_command(
    address: str,
    temp_dir: str,
    host: str,
    first_port: int,
    *,
    num_cpus: int = 1,
    dashboard: bool = False,
    workers: range | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """`gcs-ha ray-head --address=ADDRESS -- <ray start options>`: a head node on `host`
    with Ray's temp dir `temp_dir`, its services on first_port..+5, its Ray client server
    on +6, its dashboard on +7 (run when `dashboard`), its workers on `workers` (default
    +100..+199), then `extra` options."""
    workers = range(first_port + 100, first_port + 200) if workers is None else workers
    ray_args = [f"--num-cpus={num_cpus}", f"--node-ip-address={host}", f"--temp-dir={temp_dir}"]
    ray_args += [f"--include-dashboard={str(dashboard).lower()}", f"--dashboard-host={host}"]
    ray_args += [f"--dashboard-port={first_port + 7}", f"--ray-client-server-port={first_port + 6}"]
    ray_args += port_options(first_port, workers)
    return ray_head(address, *ray_args, *extra)


@dataclass
class RayOnGcsHa:
    """A started 3-replica gcs-ha cluster with its leader serving, and what starts Ray on it."""

    gcs: ProcessCluster
    ray: RayProcesses
    address: str  # a follower's gRPC address: the one Ray's processes are given
    temp_dir: str  # Ray's --temp-dir, short (Ray's socket paths must fit)
    leader: int  # the first leader
    followers: tuple[str, str]  # both followers' gRPC addresses; `address` is the first

    def start_nodes(
        self, head: Sequence[str], workers: Sequence[Sequence[str]] = ()
    ) -> tuple[RayNode, list[RayNode]]:
        """Start "head" (`gcs-ha ray-head` given the first follower) with `ray start`
        options `head`, then "node1", "node2"... (`ray start --address`, given the second
        follower, the first, the second...) with options workers[0], workers[1]...; each
        with Ray's temp dir. Returns the head and the worker nodes."""
        temp = f"--temp-dir={self.temp_dir}"
        head_node = self.ray.start("head", ray_head(self.followers[0], *head, temp))
        worker_nodes = [
            self.ray.start(f"node{k}", ray_worker(self.followers[k % 2], *options, temp))
            for k, options in enumerate(workers, start=1)
        ]
        return head_node, worker_nodes


@contextlib.contextmanager
def ray_on_gcs_ha(
    base: Path,
    gcs_port: int,
    raft_port: int,
    host: str,
    prefix: str,
    *,
    env: Mapping[str, str] | None = None,
    failed: Callable[[], bool] = lambda: False,
) -> Iterator[RayOnGcsHa]:
    """Start a 3-replica cluster on `host` (logs under base/gcs) and give a RayProcesses
    logging to base/ray-logs and a Ray temp dir named `prefix`... . RAY_ENV and `env` are
    added to the environment of the replicas, of Ray's processes and, during the block, of
    this process (the `ray` commands a test runs itself). At the end every Ray process and
    replica is stopped, and Ray's temp dir removed unless the block raised, `failed()`
    (say, a module fixture's earlier tests failed) or GCS_HA_KEEP_RAY_LOGS is set (its
    path is printed then)."""
    env = {**RAY_ENV, **(env or {})}
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    (base / "ray-logs").mkdir(parents=True, exist_ok=True)
    ray = RayProcesses(base / "ray-logs", env)
    passed = False
    with (
        _environment(env),
        ProcessCluster(3, base / "gcs", gcs_port, raft_port, host=host) as gcs,
    ):
        try:
            gcs.start()
            leader = gcs.wait_for_leader(timeout=60)
            f1, f2 = (gcs.gcs_address(i) for i in sorted(gcs.members) if i != leader)
            yield RayOnGcsHa(gcs, ray, f1, temp_dir, leader, (f1, f2))
            passed = True
        finally:
            ray.close()
            if passed and not failed() and not os.environ.get(KEEP_LOGS):
                shutil.rmtree(temp_dir, ignore_errors=True)
            else:
                print(f"Ray logs kept in {temp_dir}, gcs-ha and driver logs in {base}")


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in os.environ during the block, the old values back after it."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def kill_leader(gcs: ProcessCluster) -> int:
    """SIGKILL the serving leader, wait until another serves, and start the killed replica
    again (a later kill then still leaves a majority); returns its index."""
    killed = gcs.wait_for_leader(timeout=60)
    gcs.kill(killed)
    gcs.wait_for_leader(timeout=60, exclude=[killed])
    gcs.restart(killed)
    return killed


def venv_cli(name: str, *args: str) -> list[str]:
    """A command of this Python's environment (`ray`, `serve`) with `args`."""
    return [str(Path(sys.executable).parent / name), *args]


def wait_for_dashboard(url: str, timeout: float = 120.0) -> None:
    """Wait until Ray's dashboard at `url` (http://HOST:PORT) answers /api/version."""

    def up() -> bool | None:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as reply:
                return reply.status == 200 or None
        except OSError:
            return None

    wait_until(up, timeout, f"the dashboard at {url} does not answer")
