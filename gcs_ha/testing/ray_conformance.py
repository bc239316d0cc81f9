"""A harness for porting Ray's own GCS tests to gcs-ha (tests/ray_conformance/).

`ConformanceCluster`: 3 replicas, a Ray head and nodes, and drivers that stop where a
test must act; `kill_leader`, `lose_majority` and `bring_back` stand for Ray's GCS restarts.
Layout and ports: DESIGN.md ("Ray's GCS tests ported"). Every process is killed (by PID or
session) by `close` or when the `with` block ends.
Errors: AssertionError when a driver or node fails (with the tail of its log),
gcs_ha.errors.UnavailableError when a wait times out.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from gcs_ha.errors import GcsHaError
from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import (
    RAY_ENV,
    RayNode,
    RayProcesses,
    port_options,
    ray_head_command,
)
from gcs_ha.testing.sessions import alive, cmdline

HOST = "127.0.0.2"
REPLICAS = 3
LOG_TAIL = 4000

# Helpers every driver script starts with (after it, the script's own code).
DRIVER_PRELUDE = '''
import json, os, sys, time
import ray

ADDRESS = sys.argv[1]

def say(tag, value=None):
    """One line for the test: TAG and a JSON value."""
    print(tag, json.dumps(value), flush=True)

def wait_for_test(tag, value=None):
    """Ask the test to act (tag), then wait until it answers "go"."""
    say(tag, value)
    answer = sys.stdin.readline().strip()
    if answer != "go":
        raise SystemExit(f"the test answered {answer!r} to {tag}")

def outcome(call):
    """["ok", result] or the exception's class names (most derived first) and text."""
    try:
        return ["ok", call()]
    except Exception as exc:
        return [[c.__name__ for c in type(exc).__mro__], str(exc)[:500]]

def until(probe, timeout, pause=0.2):
    """Call probe until it returns something true (returned), or None at the timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(pause)
    return None
'''

MAX_NODES = 6  # node slots in a cluster's 900 ports (workers: 60 each from +500)


class Driver:
    """A running driver: its TAG lines, read by a thread of its own, and its stdin."""

    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self._ended = False

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        return f"driver log {self.log_path}:\n{text[-LOG_TAIL:]}"

    def read(self, tag: str, timeout: float = 120.0) -> Any:
        """The JSON value of the next `tag` line (earlier lines of other tags are kept in
        `lines`); fails if the driver ends or says nothing of the kind in time."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            assert left > 0 and not self._ended, (
                f"no {tag!r} line from the driver (exit code {self.proc.poll()}); "
                f"it printed {self.lines[-20:]}\n{self.log_tail()}"
            )
            try:
                line = self._queue.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if line is None:
                self._ended = True
                continue
            self.lines.append(line)
            name, _, value = line.partition(" ")
            if name == tag:
                return json.loads(value) if value else None

    def go(self) -> None:
        """Let a driver waiting in `wait_for_test` go on."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the driver if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self, timeout: float = 120.0) -> None:
        """Wait for the driver to exit; it must exit 0."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the driver did not exit\n{self.log_tail()}") from None
        assert code == 0, f"the driver exited {code}\n{self.log_tail()}"


class ConformanceCluster:
    """A gcs-ha cluster with a Ray head node on it, for Ray's GCS tests (module doc)."""

    def __init__(
        self,
        base_dir: Path,
        first_port: int,
        system_config: Mapping[str, Any],
        head_cpus: int = 2,
    ) -> None:
        self.base_dir = base_dir
        self.first_port = first_port
        self.system_config = dict(system_config)
        self.head_cpus = head_cpus
        self.gcs = ProcessCluster(
            REPLICAS, base_dir / "gcs", first_port, first_port + 10, host=HOST
        )
        (base_dir / "ray-logs").mkdir(parents=True, exist_ok=True)
        self.ray = RayProcesses(base_dir / "ray-logs")
        self.temp_dir = tempfile.mkdtemp(prefix="ghc-", dir="/tmp")  # short: Ray's sockets
        self.home = -1
        self.head: RayNode | None = None
        self.head_index = 0
        self.nodes_started: dict[str, RayNode] = {}
        self._drivers = 0
        self._next_node = 1

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> ConformanceCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the replicas, pick `home` (a follower) and start the head node."""
        self.gcs.start()
        leader = self.gcs.wait_for_leader(timeout=60)
        self.home = next(i for i in sorted(self.gcs.members) if i != leader)
        self.head = self.start_head("head", 0)

    def close(self, keep_logs: bool = False) -> None:
        """Kill every Ray process and replica; remove Ray's temp dir unless `keep_logs`."""
        try:
            self.ray.close()
        finally:
            self.gcs.close()
            if keep_logs:
                print(
                    f"Ray logs kept in {self.temp_dir}, gcs-ha and driver logs in {self.base_dir}"
                )
            else:
                shutil.rmtree(self.temp_dir, ignore_errors=True)

    @property
    def address(self) -> str:
        """The GCS address every Ray process of this cluster is given (replica `home`)."""
        return self.gcs.gcs_address(self.home)

    # -- Ray nodes -------------------------------------------------------------------------

    def node_ports(self, k: int) -> tuple[int, range]:
        """Node k's first port and its workers' ports, all in first_port..+899 (at most
        MAX_NODES nodes over the cluster's life)."""
        assert 0 <= k < MAX_NODES, f"node slot {k}: only {MAX_NODES} fit in the port range"
        first = self.first_port + 100 + 20 * k
        workers = self.first_port + 500 + 60 * k
        return first, range(workers, workers + 60)

    def dashboard_url(self, k: int | None = None) -> str:
        first, _ = self.node_ports(self.head_index if k is None else k)
        return f"http://{HOST}:{first + 7}"

    def start_head(self, name: str, k: int) -> RayNode:
        """`gcs-ha ray-head` with the dashboard, as node k; becomes `self.head`."""
        first, workers = self.node_ports(k)
        config = [f"--system-config={json.dumps(self.system_config)}"]
        cmd = ray_head_command(
            self.address, self.temp_dir, HOST, first,
            num_cpus=self.head_cpus, dashboard=True, workers=workers, extra=config,
        )  # fmt: skip
        # The autoscaler's and the dashboard's Prometheus servers (44217 and 44227 unless
        # told otherwise) get ports of the node's own.
        metrics = {
            "AUTOSCALER_METRIC_PORT": str(first + 8),
            "DASHBOARD_METRIC_PORT": str(first + 9),
        }
        node = self._start(name, cmd, metrics)
        self.head, self.head_index = node, k
        self.nodes_started[name] = node
        return node

    def start_node(
        self,
        name: str,
        cpus: int,
        resources: Mapping[str, float] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RayNode:
        """`ray start --address=<home>`: a node with `cpus` CPUs and `resources`, its
        processes with `env` added to their environment."""
        k = self._next_node
        self._next_node += 1
        first, workers = self.node_ports(k)
        ray_cli = str(Path(sys.executable).parent / "ray")
        cmd = [ray_cli, "start", f"--address={self.address}", f"--num-cpus={cpus}"]
        cmd += [f"--node-ip-address={HOST}", f"--temp-dir={self.temp_dir}"]
        cmd += port_options(first, workers)
        if resources:
            cmd.append(f"--resources={json.dumps(dict(resources))}")
        node = self._start(name, cmd, env or {})
        self.nodes_started[name] = node
        return node

    def _start(self, name: str, cmd: list[str], env: Mapping[str, str]) -> RayNode:
        saved = self.ray.env
        self.ray.env = {**saved, **env}
        try:
            return self.ray.start(name, cmd)
        finally:
            self.ray.env = saved

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of node `name` (its raylet first)."""
        self.ray.kill_node(name)

    def next_node_index(self) -> int:
        """The port slot the next node started will use (for a head started again)."""
        k = self._next_node
        self._next_node += 1
        return k

    def session_logs(self) -> Path:
        """Ray's log directory of this cluster's session (every node writes there)."""
        return Path(self.temp_dir) / "session_latest" / "logs"

    # -- drivers ---------------------------------------------------------------------------

    def driver(self, body: str, *args: str, env: Mapping[str, str] | None = None) -> Driver:
        """Run DRIVER_PRELUDE + `body` as `python -c`, with argv[1] = the GCS address
        (home's) and then `args`; `env` added to its environment."""
        self._drivers += 1
        log_path = self.base_dir / "ray-logs" / f"driver-{self._drivers}.log"
        script = DRIVER_PRELUDE + body
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", script, self.address, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **RAY_ENV, **(env or {})},
            )
        self.ray.drivers.append(proc)  # killed by RayProcesses.close
        return Driver(proc, log_path)

    # -- the GCS going away and coming back ------------------------------------------------

    def healthy_leader(self, timeout: float = 60.0) -> int:
        """Wait until every replica runs and names the same serving leader; that leader."""

        def agreed() -> int | None:
            statuses = []
            for i in sorted(self.gcs.members):
                if not self.gcs.is_running(i):
                    return None
                try:
                    statuses.append(self.gcs.status(i, timeout=2.0))
                except GcsHaError:
                    return None
            leaders = {s.leader_node_id for s in statuses}
            serving = [
                i for i, s in zip(sorted(self.gcs.members), statuses, strict=True) if s.serving
            ]
            if len(leaders) != 1 or "" in leaders or len(serving) != 1:
                return None
            return serving[0]

        return wait_until(agreed, timeout, "the replicas do not agree on a serving leader")

    def leader_to_kill(self) -> int:
        """The serving leader, once every replica is up, moved off `home` if it was there
        (so that Ray's replica survives the kill)."""
        leader = self.healthy_leader()
        if leader != self.home:
            return leader
        target = next(i for i in sorted(self.gcs.members) if i != self.home)
        with self.gcs.admin(leader) as admin:
            admin.transfer_leadership(self.gcs.node_id(target))

        def moved() -> int | None:
            now = self.gcs.serving_leader()
            return None if now is None or now == self.home else now

        return wait_until(moved, 60, "leadership did not move off the home replica")

    def kill(self, i: int) -> None:
        """SIGKILL replica i (both of its processes)."""
        self.gcs.kill(i)

    def kill_leader(self) -> int:
        """SIGKILL the leader (never `home`: see leader_to_kill); its index."""
        leader = self.leader_to_kill()
        self.kill(leader)
        return leader

    def lose_majority(self) -> list[int]:
        """SIGKILL every replica but `home`, the leader among them: no replica can serve
        until `bring_back`. The indices killed."""
        leader = self.leader_to_kill()
        killed = [leader, *(i for i in sorted(self.gcs.members) if i not in (leader, self.home))]
        for i in killed:
            self.kill(i)
        return killed

    def bring_back(self, killed: Iterable[int]) -> int:
        """Start killed replicas again (after another one serves, if a majority is left);
        the serving leader."""
        killed = list(killed)
        if len(killed) < (REPLICAS + 1) // 2:
            self.gcs.wait_for_leader(timeout=60, exclude=killed)
        for i in killed:
            self.gcs.restart(i)
        return self.gcs.wait_for_leader(timeout=60)

    def restore(self) -> None:
        """After a test: kill the drivers still running, start the replicas that are not
        running (a test that failed midway), wait for a serving leader."""
        for proc in self.ray.drivers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        down = [i for i in sorted(self.gcs.members) if not self.gcs.is_running(i)]
        for i in down:
            self.gcs.restart(i)
        self.gcs.wait_for_leader(timeout=60)

    def wipe_and_restart_all(self) -> None:
        """Kill every replica, delete its data, start a new cluster on the same addresses
        (every table and the cluster id lost: what Ray's tests do by flushing Redis)."""
        for i in sorted(self.gcs.members):
            if self.gcs.is_running(i):
                self.kill(i)
        for i in sorted(self.gcs.members):
            shutil.rmtree(self.gcs.data_dir(i), ignore_errors=True)
        self.gcs.start()
        self.gcs.wait_for_leader(timeout=60)

    # -- the GCS tables, read through our stubs (the same calls Ray's clients make) --------

    def _call(self, service: str, method: str, request: Any) -> Any:
        with grpc.insecure_channel(self.address) as channel:
            stub = getattr(pb_grpc, f"{service}Stub")(channel)
            return getattr(stub, method)(request, timeout=10)

    def node_table(self) -> dict[str, gcs_pb2.GcsNodeInfo]:
        """Every node the GCS knows, by node id (hex)."""
        reply = self._call("NodeInfoGcsService", "GetAllNodeInfo", pb.GetAllNodeInfoRequest())
        return {n.node_id.hex(): n for n in reply.node_info_list}

    def alive_nodes(self) -> set[str]:
        return {i for i, n in self.node_table().items() if n.state == gcs_pb2.GcsNodeInfo.ALIVE}

    def job_table(self) -> list[gcs_pb2.JobTableData]:
        reply = self._call("JobInfoGcsService", "GetAllJobInfo", pb.GetAllJobInfoRequest())
        return list(reply.job_info_list)

    def job(self, job_hex: str) -> gcs_pb2.JobTableData | None:
        return next((j for j in self.job_table() if j.job_id.hex() == job_hex), None)


def raylet_flag(pid: int, name: str) -> str:
    """The value of raylet flag `--name=value` in process `pid`'s command line."""
    prefix = f"--{name}="
    values = [a[len(prefix) :] for a in cmdline(pid) if a.startswith(prefix)]
    assert values, f"raylet {pid} has no {prefix}"
    return values[0]


def write_module(directory: Path, name: str, source: str) -> Path:
    """Write a Python module that Ray's processes import (e.g. a runtime-env plugin)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


def wait_gone(pids: Sequence[int], timeout: float) -> None:
    """Wait until none of `pids` runs (zombies count as gone)."""
    wait_until(lambda: not any(alive(p) for p in pids) or None, timeout, f"{pids} still run")


def kill_pid(pid: int) -> None:
    """SIGKILL one process (a Ray worker), if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
