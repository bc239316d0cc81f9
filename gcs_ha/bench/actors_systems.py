"""The Ray clusters `gcs-ha bench actors` compares, each started fresh and stopped by PID:
`ray-memory` (a normal Ray head) and `gcs-ha-N` (N replicas and a `gcs-ha ray-head`).

Ray's processes are found and SIGKILLed by session, never by `ray stop`. The port layout
is in DESIGN.md ("`bench actors`").

Raises ConfigError (no `ray` CLI next to this Python) and UnavailableError (a process
did not come up; the message names its log).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gcs_ha.bench.cpu import Replica, RoleCpu
from gcs_ha.errors import ConfigError, GcsHaError, UnavailableError
from gcs_ha.processes import Process, gcs_ha_command, spawn, terminate_all
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.sessions import alive, exe_name, kill_sessions, session_members

HOST = "127.0.0.5"
SYSTEMS = ("ray-memory", "gcs-ha-1", "gcs-ha-3")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
PORT_SPAN = 500  # base .. base+499
WORKER_PORTS = 300  # base+200 .. base+499
HEAD_PORT_NAMES = ("node-manager", "object-manager", "metrics-export", "dashboard-agent-listen",
                   "dashboard-agent-grpc", "runtime-env-agent")  # fmt: skip


def head_args(base_port: int, num_cpus: int, temp_dir: Path) -> list[str]:
    """The `ray start --head` options both heads get (all but the GCS port)."""
    ports = [f"--{name}-port={base_port + 100 + i}" for i, name in enumerate(HEAD_PORT_NAMES)]
    return [
        f"--node-ip-address={HOST}",
        f"--num-cpus={num_cpus}",
        "--include-dashboard=false",
        f"--ray-client-server-port={base_port + 106}",
        f"--dashboard-port={base_port + 107}",
        *ports,
        f"--min-worker-port={base_port + 200}",
        f"--max-worker-port={base_port + 200 + WORKER_PORTS - 1}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]


def ray_cli() -> Path:
    """The `ray` command of the installed wheel (beside this Python)."""
    path = Path(sys.executable).parent / "ray"
    if not os.access(path, os.X_OK):
        raise ConfigError(f"no `ray` command at {path}: pip install ray==2.60.0")
    return path


# -- processes by session ----------------------------------------------------------------


# -- a running system ------------------------------------------------------------------------


@dataclass
class ActorSystem:
    """A started cluster: the GCS address drivers use, the GCS server processes (label ->
    pid) whose memory is read, and the processes whose exit fails the run."""

    name: str
    address: str
    servers: dict[str, int] = field(default_factory=dict)
    watched: dict[str, tuple[int, Path]] = field(default_factory=dict)  # label -> pid, log
    cluster: ProcessCluster | None = None
    roles: RoleCpu | None = None  # gcs-ha: CPU by replica role (the leader at the start)

    def check_alive(self) -> None:
        """UnavailableError naming the first watched process that has gone."""
        for label, (pid, log) in self.watched.items():
            if not alive(pid):
                raise UnavailableError(f"{self.name}: {label} (pid {pid}) exited; see {log}")

    def term(self) -> int | None:
        """For gcs-ha: the highest Raft term any replica reports (None for Ray, or when
        none answers). Its growth over a step counts the elections in it."""
        if self.cluster is None:
            return None
        terms = []
        for i in self.cluster.running():
            with contextlib.suppress(GcsHaError):
                terms.append(self.cluster.status(i, timeout=5.0).term)
        return max(terms, default=None)

    def leader_label(self) -> str | None:
        """For gcs-ha: the label of the replica serving now (asked by admin Status)."""
        if self.cluster is None:
            return None
        leader = self.cluster.serving_leader()
        return None if leader is None else self.cluster.node_id(leader)


@dataclass
class RaySessions:
    """`ray start` commands, each run in a session of its own; kills every session."""

    log_dir: Path
    starters: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str]) -> int:
        """Run `cmd` until it exits 0 (UnavailableError otherwise); returns its session id."""
        log = self.log_dir / f"{name}.log"
        proc = spawn(cmd, log, RAY_ENV)
        self.starters[name] = proc
        try:
            code = proc.wait(START_TIMEOUT_S)
        except Exception:
            code = None
        if code != 0:
            raise UnavailableError(f"{name}: `ray start` exited with {code}; see {log}")
        return proc.pid

    def find(self, sid: int, exe: str) -> int:
        """The pid of the process of session `sid` running `exe` (UnavailableError if none)."""
        pids = [pid for pid in session_members(sid) if exe_name(pid) == exe]
        if len(pids) != 1:
            raise UnavailableError(f"expected one {exe} in session {sid}, found {pids}")
        return pids[0]

    def close(self) -> None:
        kill_sessions([proc.pid for proc in self.starters.values()])
        for proc in self.starters.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@contextlib.contextmanager
def start_system(
    name: str, base_dir: Path, base_port: int, num_cpus: int, temp_dir: Path
) -> Iterator[ActorSystem]:
    """Start `name` under `base_dir`; every process it started is stopped when the block
    ends, whatever happened in it."""
    if name not in SYSTEMS:
        raise ConfigError(f"unknown system {name!r}: choose from {', '.join(SYSTEMS)}")
    sessions = RaySessions(base_dir / "logs")
    args = head_args(base_port, num_cpus, temp_dir)
    try:
        if name == "ray-memory":
            yield _ray_memory(sessions, base_port, [str(ray_cli()), "start", "--head", *args])
        else:
            with _gcs_ha(name, base_dir, base_port, sessions, args) as system:
                yield system
    finally:
        sessions.close()


def _ray_memory(sessions: RaySessions, base_port: int, cmd: list[str]) -> ActorSystem:
    sid = sessions.start("head", [*cmd, f"--port={base_port}"])
    system = ActorSystem("ray-memory", f"{HOST}:{base_port}")
    gcs, raylet = sessions.find(sid, "gcs_server"), sessions.find(sid, "raylet")
    system.servers["gcs_server"] = gcs
    logs = sessions.log_dir / "head.log"
    system.watched = {"gcs_server": (gcs, logs), "raylet": (raylet, logs)}
    return system


@contextlib.contextmanager
def _gcs_ha(
    name: str, base_dir: Path, base_port: int, sessions: RaySessions, args: list[str]
) -> Iterator[ActorSystem]:
    n = int(name.removeprefix("gcs-ha-"))
    cluster = ProcessCluster(
        n,
        base_dir / "gcs-ha",
        gcs_port=base_port + 10,
        raft_port=base_port + 20,
        host=HOST,
        cluster_name="gcs-ha-bench",
        log_level="warning",
    )
    with cluster:
        try:
            cluster.start()
            leader = cluster.wait_for_leader(timeout=START_TIMEOUT_S)
            for i in range(n):
                cluster.wait_for_members(n, i, timeout=START_TIMEOUT_S)
            address = cluster.gcs_address(leader)
            system = ActorSystem(name, address, cluster=cluster)
            replicas = []
            for i in range(n):
                proc = cluster.process(i)
                assert proc is not None
                system.servers[cluster.node_id(i)] = proc.pid
                system.watched[cluster.node_id(i)] = (proc.pid, cluster.log_path(i))
                replicas.append(Replica(proc.pid, leader=i == leader))
            system.roles = RoleCpu(replicas)
            cmd = [*gcs_ha_command(), "ray-head", f"--address={address}", "--", *args]
            sid = sessions.start("head", cmd)
            system.watched["raylet"] = (sessions.find(sid, "raylet"), sessions.log_dir / "head.log")
            yield system
        finally:
            sessions.close()  # Ray first, while its GCS still answers
            terminate_all([p for i in range(n) if (p := cluster.process(i))], STOP_GRACE_S)
