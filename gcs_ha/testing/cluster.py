"""ProcessCluster: real `gcs-ha start` processes on this machine, for e2e tests and drills.

    with ProcessCluster(3, tmp_path, gcs_port=22000, raft_port=24000) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(timeout=30)
        cluster.kill(leader)                      # SIGKILL, by PID
        cluster.restart(leader)

Every process it started is SIGKILLed by PID when the `with` block ends. Layout: DESIGN.md.
Waiting methods raise UnavailableError when their timeout passes; admin calls raise
the gcs_ha.errors mapping of the gRPC status (gcs_ha.admin_client).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from gcs_ha.admin_auth import admin_key
from gcs_ha.admin_client import AdminClient
from gcs_ha.errors import GcsHaError
from gcs_ha.processes import (
    Process,
    gcs_ha_command,
    replica_command,
    signal_replica,
    spawn,
    terminate_all,
)
from gcs_ha.proto import admin_pb2
from gcs_ha.secret import generate_secret_file, read_secret_file
from gcs_ha.testing.polling import wait_until

T = TypeVar("T")


class ProcessCluster:
    """A cluster of replica processes managed by PID."""

    def __init__(
        self,
        n: int,
        base_dir: Path,
        gcs_port: int,
        raft_port: int,
        *,
        host: str = "127.0.0.1",
        cluster_name: str = "gcs-ha-test",
        secure: bool = True,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        replica_env: Callable[[int], Mapping[str, str]] | None = None,
        http_port: int | None = None,
    ) -> None:
        """`replica_env(i)`: extra environment variables for replica i's process;
        `http_port`: replica i serves its HTTP listener on http_port + i (None: none)."""
        self.http_port = http_port
        self.base_dir = base_dir.absolute()
        self.host = host
        self.gcs_port = gcs_port
        self.raft_port = raft_port
        self.cluster_name = cluster_name
        self.log_level = log_level
        self.extra_args = tuple(extra_args)
        self.replica_env = replica_env
        self.members: set[int] = set(range(n))  # indices currently in the Raft membership
        self.size = n  # indices 0..size-1 have been used
        self.secret_file: Path | None = self.base_dir / "cluster.secret" if secure else None
        self._procs: dict[int, Process] = {}
        self._all: list[Process] = []
        self._paused: set[int] = set()

    # -- names and places ---------------------------------------------------------------

    def node_id(self, i: int) -> str:
        return f"r{i}"

    def gcs_address(self, i: int) -> str:
        return f"{self.host}:{self.gcs_port + i}"

    def raft_address(self, i: int) -> str:
        return f"{self.host}:{self.raft_port + i}"

    def http_address(self, i: int) -> str:
        """Replica i's HTTP listener (needs `http_port`)."""
        assert self.http_port is not None, "started without http_port"
        return f"{self.host}:{self.http_port + i}"

    def _http_args(self, i: int) -> list[str]:
        return [] if self.http_port is None else [f"--http-address={self.http_address(i)}"]

    def data_dir(self, i: int) -> Path:
        return self.base_dir / self.node_id(i)

    def log_path(self, i: int) -> Path:
        return self.base_dir / "logs" / f"{self.node_id(i)}.log"

    # -- processes ---------------------------------------------------------------------

    def start(self, i: int | None = None) -> ProcessCluster:
        """Start replica i, or (i None) every member that is not running.

        A replica is started with `gcs-ha start` and the other members as its peers.
        """
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.secret_file is not None:
            generate_secret_file(self.secret_file)
        for j in sorted(self.members) if i is None else [i]:
            if i is not None or not self.is_running(j):
                self._start_one(j)
        return self

    def _start_one(self, i: int) -> Process:
        peers = [self.raft_address(j) for j in sorted(self.members) if j != i]
        cmd = replica_command(
            node_id=self.node_id(i),
            data_dir=self.data_dir(i),
            raft_address=self.raft_address(i),
            gcs_address=self.gcs_address(i),
            peers=peers,
            cluster_name=self.cluster_name,
            secret_file=self.secret_file,
            log_level=self.log_level,
            extra=[*self.extra_args, *self._http_args(i)],
        )
        return self._spawn(i, cmd)

    def join_replica(self, via: int) -> int:
        """Start a new replica with `gcs-ha join --address <replica via>`; returns its index.

        It becomes a member once the leader added it (see `wait_for_members`).
        """
        i = self.size
        self.size += 1
        self._join(i, via)
        return i

    def rejoin(self, i: int, via: int) -> None:
        """Start replica i again as a new member through `gcs-ha join` (same addresses),
        on a wiped data dir; for a replica that left the membership."""
        if self.is_running(i):
            raise RuntimeError(f"replica {i} is still running")
        shutil.rmtree(self.data_dir(i), ignore_errors=True)
        self._join(i, via)

    def _join(self, i: int, via: int) -> None:
        cmd = [
            *gcs_ha_command(),
            "join",
            f"--address={self.gcs_address(via)}",
            f"--node-id={self.node_id(i)}",
            f"--data-dir={self.data_dir(i)}",
            f"--raft-address={self.raft_address(i)}",
            f"--gcs-address={self.gcs_address(i)}",
            f"--log-level={self.log_level}",
        ]
        cmd.append(f"--secret-file={self.secret_file}" if self.secret_file else "--insecure")
        self._spawn(i, [*cmd, *self._http_args(i)])
        self.members.add(i)

    def _spawn(self, i: int, cmd: list[str]) -> Process:
        if self.is_running(i):
            raise RuntimeError(f"replica {i} is already running")
        env = self.replica_env(i) if self.replica_env is not None else None
        proc = spawn(cmd, self.log_path(i), env)
        self._procs[i] = proc
        self._all.append(proc)
        self._paused.discard(i)
        return proc

    def process(self, i: int) -> Process | None:
        return self._procs.get(i)

    def is_running(self, i: int) -> bool:
        proc = self._procs.get(i)
        return proc is not None and proc.poll() is None

    def running(self) -> list[int]:
        """Indices of replicas whose process runs and is not paused."""
        return [i for i in sorted(self._procs) if self.is_running(i) and i not in self._paused]

    def stop(self, i: int, timeout: float = 10.0) -> int:
        """SIGTERM replica i (SIGKILL after `timeout`); returns its exit code."""
        proc = self._procs[i]
        self._paused.discard(i)
        return terminate_all([proc], timeout)[0]

    def kill(self, i: int) -> int:
        """SIGKILL replica i (both of its processes); returns its exit code."""
        proc = self._procs[i]
        signal_replica(proc, signal.SIGKILL)
        self._paused.discard(i)
        return proc.wait()

    def pause(self, i: int) -> None:
        """SIGSTOP replica i, both of its processes (it keeps its sockets but answers
        nothing)."""
        signal_replica(self._procs[i], signal.SIGSTOP)
        self._paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT a paused replica."""
        signal_replica(self._procs[i], signal.SIGCONT)
        self._paused.discard(i)

    def restart(self, i: int, timeout: float = 10.0) -> Process:
        """Stop replica i if it runs, then start it again on the same data dir."""
        if self.is_running(i):
            self.stop(i, timeout)
        return self._start_one(i)

    def close(self) -> None:
        """SIGKILL every process this harness started (idempotent)."""
        for proc in self._all:
            signal_replica(proc, signal.SIGCONT)
            signal_replica(proc, signal.SIGKILL)
        for proc in self._all:
            proc.wait()

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- admin -------------------------------------------------------------------------

    @property
    def admin_key(self) -> bytes | None:
        """The key that signs admin calls (None for an insecure cluster)."""
        if self.secret_file is None:
            return None
        return admin_key(read_secret_file(self.secret_file))

    def status(self, i: int, timeout: float = 3.0) -> admin_pb2.ReplicaStatus:
        with AdminClient(self.gcs_address(i), timeout) as client:
            return client.status()

    def digest(self, i: int, timeout: float = 10.0) -> tuple[int, str]:
        with self.admin(i, timeout) as client:
            return client.digest()

    def admin(self, i: int, timeout: float = 10.0) -> AdminClient:
        """An admin client of replica i that proves the cluster secret (close it, or use
        it in a `with`)."""
        return AdminClient(self.gcs_address(i), timeout, self.admin_key)

    def leader_address(self) -> str | None:
        """The gRPC address of a replica that serves now, or None."""
        leader = self._serving_leader()
        return None if leader is None else self.gcs_address(leader)

    def serving_leader(self) -> int | None:
        """Index of a running replica that serves now (the highest term), or None."""
        return self._serving_leader()

    def wait_for_leader(self, timeout: float = 30.0, exclude: Sequence[int] = ()) -> int:
        """Index of a running replica that serves (leader, barrier applied)."""
        return wait_until(
            lambda: self._serving_leader(exclude), timeout, "no replica serves as leader"
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running replica answers Status."""

        def ready() -> bool | None:
            return all(self._try_status(i) is not None for i in self.running()) or None

        wait_until(ready, timeout, "not every running replica answers")

    def wait_for_members(self, count: int, i: int, timeout: float = 30.0) -> list[str]:
        """Wait until replica i lists `count` members, each registered (node id and gRPC
        address known); returns their node ids."""

        def members() -> list[str] | None:
            status = self._try_status(i)
            if status is None or len(status.members) != count:
                return None
            if not all(m.node_id and m.gcs_address for m in status.members):
                return None
            return sorted(m.node_id for m in status.members)

        return wait_until(members, timeout, f"replica {i} does not list {count} members")

    def _try_status(self, i: int) -> admin_pb2.ReplicaStatus | None:
        try:
            return self.status(i, timeout=1.0)
        except GcsHaError:
            return None

    def _serving_leader(self, exclude: Sequence[int] = ()) -> int | None:
        serving = []
        for i in self.running():
            status = None if i in exclude else self._try_status(i)
            if status is not None and status.serving:
                serving.append((status.term, i))
        return max(serving)[1] if serving else None
