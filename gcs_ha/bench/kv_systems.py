"""The servers `gcs-ha bench kv` compares (ray-memory, ray-redis, gcs-ha-N), each started
fresh on loopback and stopped by PID.

`start_system` is a context manager yielding a `RunningSystem`; every process it started
is stopped by PID whatever happens inside the `with`. Ports and profiling: DESIGN.md
("`bench kv`").

Raises ConfigError when a system cannot be run here (no redis-server, no gcs_server
binary) and UnavailableError when a server does not come up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import sys
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcs_ha.bench.cpu import Replica, RoleCpu
from gcs_ha.errors import ConfigError, UnavailableError
from gcs_ha.processes import Process, spawn, terminate_all
from gcs_ha.testing.cluster import ProcessCluster

HOST = "127.0.0.1"
SYSTEMS = ("ray-memory", "ray-redis", "gcs-ha-1", "gcs-ha-3")
REDIS_FSYNC = ("none", "everysec", "always")
STOP_GRACE_S = 10.0
START_TIMEOUT_S = 60.0
REDIS_MISSING = (
    "redis-server is not installed, so ray-redis cannot run. Install it "
    "(Debian/Ubuntu: apt-get update && apt-get install -y redis-server) "
    "or leave ray-redis out of --systems."
)
PROFILE_ENV = "GCS_HA_BENCH_PROFILE"  # a directory: gcs-ha replicas run under cProfile
THREADS_ENV = "GCS_HA_BENCH_THREADS"  # a directory: per-thread CPU of the servers, per point


@dataclass
class RunningSystem:
    """A started system: where its clients connect and which processes serve it."""

    name: str
    address: str
    procs: dict[str, Process] = field(default_factory=dict)  # label -> process
    logs: dict[str, Path] = field(default_factory=dict)  # label -> its output
    roles: RoleCpu | None = None  # gcs-ha: CPU by replica role
    cluster: ProcessCluster | None = None  # gcs-ha: the replicas (bench scale kills one)

    def check_alive(self) -> None:
        """UnavailableError naming the first server process that has exited."""
        for label, proc in self.procs.items():
            if proc.poll() is not None:
                raise UnavailableError(
                    f"{self.name}: {label} exited with code {proc.returncode}; "
                    f"see {self.logs.get(label)}"
                )


def check_available(systems: tuple[str, ...]) -> None:
    """ConfigError, before anything starts, if a requested system cannot run here."""
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ConfigError(f"unknown systems {unknown}: choose from {', '.join(SYSTEMS)}")
    if any(s.startswith("ray-") for s in systems):
        ray_gcs_server()
    if "ray-redis" in systems and shutil.which("redis-server") is None:
        raise ConfigError(REDIS_MISSING)


def ray_gcs_server() -> Path:
    """The `gcs_server` binary of the installed ray wheel (found without importing ray)."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        raise ConfigError("ray is not installed: pip install ray==2.60.0")
    binary = Path(spec.origin).parent / "core" / "src" / "ray" / "gcs" / "gcs_server"
    if not os.access(binary, os.X_OK):
        raise ConfigError(f"no executable gcs_server in the ray wheel at {binary}")
    return binary


@contextlib.contextmanager
def start_system(
    name: str, base_dir: Path, base_port: int, redis_fsync: str = "everysec"
) -> Iterator[RunningSystem]:
    """Start `name` under `base_dir`; stop every process it started when the block ends."""
    base_dir.mkdir(parents=True, exist_ok=True)
    if name.startswith("gcs-ha-"):
        with _gcs_ha(name, base_dir, base_port) as running:
            yield running
        return
    running = RunningSystem(name, f"{HOST}:{base_port}")
    try:
        redis_port = None
        if name == "ray-redis":
            redis_port = base_port + 1
            _start_redis(running, base_dir, redis_port, redis_fsync)
        _start_ray_gcs(running, base_dir, base_port, redis_port)
        yield running
    finally:
        terminate_all(list(running.procs.values()), STOP_GRACE_S)


def _start_redis(running: RunningSystem, base_dir: Path, port: int, fsync: str) -> None:
    """A redis-server on loopback, its files in base_dir/redis, AOF per `fsync`."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise ConfigError(REDIS_MISSING)
    data = base_dir / "redis"
    data.mkdir(exist_ok=True)
    aof = ["--appendonly", "no"]
    if fsync != "none":
        aof = ["--appendonly", "yes", "--appendfsync", fsync]
    cmd = [exe, "--port", str(port), "--bind", HOST, "--dir", str(data), "--save", ""]
    log = base_dir / "logs" / "redis.log"
    running.procs["redis-server"] = spawn([*cmd, *aof, "--daemonize", "no"], log)
    running.logs["redis-server"] = log
    _wait(lambda: _redis_ping(port), running, "redis-server did not answer PING")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_ray_gcs(
    running: RunningSystem, base_dir: Path, port: int, redis_port: int | None
) -> None:
    """Ray's gcs_server, with the flags `ray start --head` gives it (ray/_private/services.py)."""
    cmd = ray_gcs_command(base_dir / "ray-session", port)
    if redis_port is not None:
        cmd += [f"--redis_address={HOST}", f"--redis_port={redis_port}", "--redis_enable_ssl=false"]
    log = base_dir / "logs" / "gcs_server.log"
    running.procs["gcs_server"] = spawn(cmd, log)
    running.logs["gcs_server"] = log
    _wait(lambda: _port_open(port), running, f"gcs_server did not listen on {port}")


def ray_gcs_command(session: Path, port: int) -> list[str]:
    """The command line of Ray's gcs_server on HOST:`port`, in memory, its session files
    (logs) under `session`; the flags `ray start --head` gives it."""
    (session / "logs").mkdir(parents=True, exist_ok=True)
    return [
        str(ray_gcs_server()),
        f"--log_dir={session / 'logs'}",
        f"--config_list={b64encode(b'{}').decode()}",
        f"--gcs_server_port={port}",
        "--metrics-agent-port=-1",
        f"--node-ip-address={HOST}",
        "--session-name=session_gcs_ha_bench",
        f"--session-dir={session}",
        f"--node-id={os.urandom(28).hex()}",
    ]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait(probe: Callable[[], bool], running: RunningSystem, what: str) -> None:
    """Poll `probe` until true; UnavailableError if a process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not probe():
        running.check_alive()
        if time.monotonic() > deadline:
            raise UnavailableError(f"{running.name}: {what} within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


class _BenchCluster(ProcessCluster):
    """A ProcessCluster whose replicas may run under cProfile (PROFILE_ENV)."""

    def __init__(self, n: int, base_dir: Path, base_port: int, profile_dir: Path | None) -> None:
        super().__init__(
            n,
            base_dir,
            gcs_port=base_port + 10,
            raft_port=base_port + 20,
            cluster_name="gcs-ha-bench",
            log_level="warning",
        )
        self.profile_dir = profile_dir

    def _spawn(self, i: int, cmd: list[str]) -> Process:
        prefix = [sys.executable, "-m", "gcs_ha.cli"]
        if self.profile_dir is not None and cmd[:3] == prefix:
            out = self.profile_dir / f"{self.base_dir.name}-{self.node_id(i)}"
            cmd = [sys.executable, "-m", "gcs_ha.bench.kv_profile", str(out), *cmd[3:]]
        return super()._spawn(i, cmd)


@contextlib.contextmanager
def _gcs_ha(name: str, base_dir: Path, base_port: int) -> Iterator[RunningSystem]:
    """An N-replica cluster of `gcs-ha start` processes; yields its serving leader."""
    n = int(name.removeprefix("gcs-ha-"))
    profile = os.environ.get(PROFILE_ENV)
    profile_dir = Path(profile).absolute() if profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with _BenchCluster(n, base_dir, base_port, profile_dir) as cluster:
        try:
            cluster.start()
            leader = cluster.wait_for_leader(timeout=START_TIMEOUT_S)
            for i in range(n):  # registrations done: no writes of the cluster's own
                cluster.wait_for_members(n, i, timeout=START_TIMEOUT_S)
            running = RunningSystem(name, cluster.gcs_address(leader), cluster=cluster)
            for i in range(n):
                proc = cluster.process(i)
                assert proc is not None
                label = f"r{i}" + (" (leader)" if i == leader else "")
                running.procs[label] = proc
                running.logs[label] = cluster.log_path(i)
            running.roles = RoleCpu(
                Replica(p.pid, label.endswith("(leader)")) for label, p in running.procs.items()
            )
            yield running
        finally:
            terminate_all([p for i in range(n) if (p := cluster.process(i))], STOP_GRACE_S)


def write_thread_cpu(
    out_dir: Path, sut: RunningSystem, point: dict[str, Any], used: dict[str, float]
) -> None:
    """Append one line per point to OUT_DIR/<system>-threads.jsonl: CPU seconds per thread
    in the window, as "<process label> <thread> (pid/tid)"; a process's main thread
    (tid = pid) is shown as "main"."""
    labels = {str(p.pid): label for label, p in sut.procs.items()}
    by_thread = {}
    for key, seconds in sorted(used.items(), key=lambda item: -item[1]):
        ids, comm = key.split(" ", 1)
        pid, tid = ids.split("/")
        name = "main" if pid == tid else comm
        if seconds > 0:
            by_thread[f"{labels.get(pid, '?')} {name} ({ids})"] = round(seconds, 2)
    record = {"op": point["op"], "clients": point["clients"], "cpu_s": by_thread}
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{sut.name}-threads.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")
