"""`gcs-ha up`: a local N-replica cluster in the foreground, for development.

A supervisor runs each replica as its own `gcs-ha start` process (replica i: node r<i>,
gRPC port P+i, Raft port R+i, HTTP port R+(R-P)+i) and keeps DIR/up.json, up.pid,
cluster.secret, logs/ and the data dirs. Addresses, restarts (SIGUSR1) and stopping:
docs/operations.md.

Raises ConfigError when the options contradict DIR's up.json or DIR is unusable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from gcs_ha.addresses import join_address, ray_node_ip
from gcs_ha.cluster_ops import gather_status
from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.processes import Process, describe_exit, replica_command, spawn, terminate_all
from gcs_ha.secret import generate_secret_file

MANIFEST = "up.json"
PID_FILE = "up.pid"
SECRET_FILE = "cluster.secret"
STOP_TIMEOUT_S = 10.0
POLL_S = 0.2
LEADER_POLL_S = 1.0

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class UpLayout:
    """Where everything of one `gcs-ha up` cluster lives."""

    data_dir: Path
    replicas: int
    port: int
    raft_port: int
    cluster_name: str
    host: str | None = None  # None: the defaults (docs/operations.md)
    node_ip: str = "127.0.0.1"  # where gRPC is advertised when `host` is None

    def node_id(self, i: int) -> str:
        return f"r{i}"

    def gcs_address(self, i: int) -> str:
        """Replica i's advertised gRPC address (what Ray and the other replicas dial)."""
        return join_address(self.host or self.node_ip, self.port + i)

    def listen_address(self, i: int) -> str | None:
        """Where replica i's gRPC port binds when not at its advertised address."""
        return None if self.host else f"0.0.0.0:{self.port + i}"

    def raft_address(self, i: int) -> str:
        return join_address(self.host or "127.0.0.1", self.raft_port + i)

    @property
    def http_port(self) -> int:
        """Replica i's HTTP listener (metrics, probes, /status) is on http_port + i."""
        return self.raft_port + (self.raft_port - self.port)

    def http_address(self, i: int) -> str:
        """Where replica i's HTTP listener binds: as its gRPC port does."""
        return join_address(self.host or "0.0.0.0", self.http_port + i)

    def replica_dir(self, i: int) -> Path:
        return self.data_dir / self.node_id(i)

    def log_path(self, i: int) -> Path:
        return self.data_dir / "logs" / f"{self.node_id(i)}.log"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / SECRET_FILE


def resolve_layout(
    data_dir: Path,
    replicas: int | None,
    port: int | None,
    raft_port: int | None,
    cluster_name: str | None,
    *,
    host: str | None = None,
) -> UpLayout:
    """The layout from the options, checked against (and completed from) DIR/up.json."""
    data_dir = data_dir.absolute()
    recorded = _read_manifest(data_dir)
    if recorded is not None:
        given = {
            "replicas": replicas,
            "port": port,
            "raft_port": raft_port,
            "cluster_name": cluster_name,
            "host": host,
        }
        for key, value in given.items():
            if value is not None and value != getattr(recorded, key):
                option = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{data_dir} holds a cluster made with {option} {getattr(recorded, key)}, "
                    f"not {value}; use the same value or another --data-dir"
                )
        return _with_node_ip(recorded)
    replicas = 3 if replicas is None else replicas
    _check_no_foreign_replicas(data_dir, replicas)
    port = 6379 if port is None else port
    raft_port = port + 1000 if raft_port is None else raft_port
    layout = UpLayout(data_dir, replicas, port, raft_port, cluster_name or "gcs-ha", host)
    _check_ports(layout)
    return _with_node_ip(layout)


def _with_node_ip(layout: UpLayout) -> UpLayout:
    return layout if layout.host else replace(layout, node_ip=ray_node_ip())


def _read_manifest(data_dir: Path) -> UpLayout | None:
    path = data_dir / MANIFEST
    try:
        raw = json.loads(path.read_text())
        return UpLayout(
            data_dir,
            replicas=int(raw["replicas"]),
            port=int(raw["port"]),
            raft_port=int(raw["raft_port"]),
            cluster_name=str(raw["cluster_name"]),
            host=_recorded_host(raw),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); fix or remove it") from exc


def _recorded_host(raw: dict[str, Any]) -> str | None:
    """The manifest's host: null is the defaults; none at all (a manifest written before
    the defaults changed) meant 127.0.0.1."""
    host = raw.get("host", "127.0.0.1")
    return None if host is None else str(host)


def _check_no_foreign_replicas(data_dir: Path, replicas: int) -> None:
    """Without up.json, replica dirs r<i> beyond the requested count mean another layout."""
    if not data_dir.is_dir():
        return
    found = sorted(p.name for p in data_dir.glob("r*") if (p / "identity.json").exists())
    extra = [name for name in found if name not in {f"r{i}" for i in range(replicas)}]
    if extra:
        raise ConfigError(
            f"{data_dir} already holds replicas {', '.join(found)}, which does not match "
            f"--replicas {replicas}"
        )


def _check_ports(layout: UpLayout) -> None:
    if layout.replicas < 1:
        raise ConfigError("--replicas must be at least 1")
    gcs = set(range(layout.port, layout.port + layout.replicas))
    raft = set(range(layout.raft_port, layout.raft_port + layout.replicas))
    http = set(range(layout.http_port, layout.http_port + layout.replicas))
    if gcs & raft or (gcs | raft) & http:
        raise ConfigError("--port and --raft-port ranges overlap; pick ports further apart")
    if max(gcs | raft | http) > 65535:
        raise ConfigError("ports beyond 65535: lower --port / --raft-port")
    if min(http) < 1:
        raise ConfigError(
            "the HTTP ports (--raft-port + (--raft-port - --port)) fall below 1: give a "
            "--raft-port above --port"
        )


def _write_manifest(layout: UpLayout) -> None:
    record = asdict(layout)
    del record["data_dir"], record["node_ip"]
    path = layout.data_dir / MANIFEST
    if not path.exists():
        path.write_text(json.dumps(record, indent=2) + "\n")


def run_up(
    layout: UpLayout,
    log_level: str,
    echo: Callable[[str], None],
    replica_flags: Sequence[str] = (),
) -> int:
    """Run the supervisor in the foreground, or poke the one already running on DIR.
    `replica_flags`: more `gcs-ha start` options for every replica."""
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    pid_fd = os.open(layout.data_dir / PID_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(pid_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _poke_running(pid_fd, layout, echo)
    try:
        os.ftruncate(pid_fd, 0)
        os.pwrite(pid_fd, f"{os.getpid()}\n".encode(), 0)
        _write_manifest(layout)
        if generate_secret_file(layout.secret_path):
            echo(f"generated cluster secret {layout.secret_path}")
        (layout.data_dir / "logs").mkdir(exist_ok=True)
        return Supervisor(layout, log_level, echo, replica_flags).run()
    finally:
        os.close(pid_fd)


def _poke_running(pid_fd: int, layout: UpLayout, echo: Callable[[str], None]) -> int:
    """Another supervisor runs on DIR: ask it to restart its dead replicas."""
    try:
        pid = int(os.pread(pid_fd, 32, 0).decode().strip())
    except ValueError:
        raise ConfigError(f"{layout.data_dir} is in use by another gcs-ha up") from None
    finally:
        os.close(pid_fd)
    os.kill(pid, signal.SIGUSR1)
    echo(f"gcs-ha up is already running on {layout.data_dir} (pid {pid}): asked it to restart")
    echo("the replicas that are down; see its output")
    return 0


class Supervisor:
    """Starts, watches, restarts on request and stops the replica processes."""

    def __init__(
        self,
        layout: UpLayout,
        log_level: str,
        echo: Callable[[str], None],
        replica_flags: Sequence[str] = (),
    ) -> None:
        self.layout = layout
        self.log_level = log_level
        self.replica_flags = list(replica_flags)
        self._echo = echo
        self._procs: dict[int, Process] = {}
        self._reported: set[int] = set()
        self._stop = False
        self._restart = False
        self._watch = LeaderWatch(layout, self._procs, self._say)

    def _say(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._echo(f"[{time.strftime('%H:%M:%S')}] {message}")

    def run(self) -> int:
        """Start every replica, supervise until SIGINT/SIGTERM, stop them all; exit code 0."""
        previous = self._install_signals()
        try:
            lay = self.layout
            self._say(
                f"cluster {lay.cluster_name!r}: {lay.replicas} replicas, data in {lay.data_dir}"
            )
            for i in range(lay.replicas):
                self._start(i)
            self._say(
                f"Ray on this cluster: gcs-ha ray-head --address {lay.gcs_address(0)} "
                "-- [ray start options]"
            )
            self._say("Ctrl-C stops the cluster; `gcs-ha up` again restarts replicas that died")
            while not self._stop:
                self._tick()
                time.sleep(POLL_S)
            return 0
        finally:
            self._stop_all()  # also when supervising failed: never leave replicas behind
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _install_signals(self) -> dict[int, _Handler]:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop = True

        def on_restart(signum: int, frame: FrameType | None) -> None:
            self._restart = True

        previous: dict[int, _Handler] = {}
        for sig, handler in ((signal.SIGINT, on_stop), (signal.SIGTERM, on_stop)):
            previous[sig] = signal.signal(sig, handler)
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_restart)
        return previous

    def _start(self, i: int) -> None:
        lay = self.layout
        peers = [lay.raft_address(j) for j in range(lay.replicas) if j != i]
        cmd = replica_command(
            node_id=lay.node_id(i),
            data_dir=lay.replica_dir(i),
            raft_address=lay.raft_address(i),
            gcs_address=lay.gcs_address(i),
            peers=peers,
            cluster_name=lay.cluster_name,
            secret_file=lay.secret_path,
            log_level=self.log_level,
            supervisor_pid=os.getpid(),
            extra=[
                *_listen_option(lay.listen_address(i)),
                f"--http-address={lay.http_address(i)}",
                *self.replica_flags,
            ],
        )
        self._procs[i] = spawn(cmd, lay.log_path(i))
        self._reported.discard(i)
        listen = lay.listen_address(i)
        self._say(
            f"{lay.node_id(i)}: pid {self._procs[i].pid}, gRPC {lay.gcs_address(i)}"
            + (f" (listening on {listen})" if listen else "")
            + f", Raft {lay.raft_address(i)}, HTTP {lay.http_address(i)} (/status, /metrics)"
            + f", log {lay.log_path(i)}"
        )

    def _tick(self) -> None:
        for i, proc in self._procs.items():
            code = proc.poll()
            if code is not None and i not in self._reported:
                self._reported.add(i)
                self._report_exit(i, code)
        if self._restart:
            self._restart = False
            down = [i for i, p in self._procs.items() if p.poll() is not None]
            if not down:
                self._say("restart requested: every replica is running")
            for i in down:
                self._start(i)
        self._watch.poll([i for i, p in self._procs.items() if p.poll() is None])

    def _report_exit(self, i: int, code: int) -> None:
        name = self.layout.node_id(i)
        self._say(
            f"{name} {describe_exit(code)}; the others keep running. "
            f"Run `gcs-ha up --data-dir {self.layout.data_dir}` again to restart it"
        )
        last = _last_line(self.layout.log_path(i))
        if code > 0 and last:
            self._say(f"{name}'s last log line: {last}")

    def _stop_all(self) -> None:
        running = sum(1 for p in self._procs.values() if p.poll() is None)
        self._say(f"stopping {running} replicas")
        codes = terminate_all(list(self._procs.values()), STOP_TIMEOUT_S)
        for i, code in zip(self._procs, codes, strict=True):
            if i not in self._reported:
                self._say(f"{self.layout.node_id(i)} {describe_exit(code)}")
        self._say("cluster stopped")


class LeaderWatch:
    """Asks a running replica about the cluster now and then; reports leader changes."""

    def __init__(
        self, layout: UpLayout, procs: dict[int, Process], say: Callable[[str], None]
    ) -> None:
        self._layout = layout
        self._procs = procs
        self._say = say
        self._leader: str | None = None
        self._next = 0.0

    def _pid_of(self, node_id: str) -> str:
        proc = self._procs.get(int(node_id.removeprefix("r")))
        return f"pid {proc.pid}" if proc else "pid ?"

    def poll(self, running: list[int]) -> None:
        if time.monotonic() < self._next or not running:
            return
        # Poll faster while no leader is known, so the first one is announced promptly.
        self._next = time.monotonic() + (LEADER_POLL_S if self._leader else LEADER_POLL_S / 4)
        try:
            view = gather_status(self._layout.gcs_address(running[0]), timeout=0.5)
        except GcsHaError:
            return  # starting or stopping; the next poll asks again
        leader = view.leader if view.leader_reachable() else None
        if leader == self._leader:
            return
        self._leader = leader
        if leader is None:
            self._say("no leader at the moment")
        else:
            self._say(
                f"leader: {leader} (gRPC {view.leader_gcs_address()}, {self._pid_of(leader)})"
            )


def _listen_option(listen: str | None) -> list[str]:
    return [] if listen is None else [f"--listen={listen}"]


def _last_line(path: Path) -> str:
    """The last non-empty line of a log file (for telling why a replica exited)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
