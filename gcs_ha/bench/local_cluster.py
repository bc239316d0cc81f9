"""A benchmark cluster whose leader runs inside the benchmark process.

`BenchCluster`: replica r0 is a `RaftReplica` on the caller's loop and the serving leader;
r1.. are `gcs-ha start` processes in the caller's `ProcessSet`.

Raises UnavailableError when r0 cannot be made the serving leader in time, or when a
follower process exits early (its log path is in the message).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from types import TracebackType

from gcs_ha.admin_auth import admin_key
from gcs_ha.admin_client import AdminClient
from gcs_ha.bench.common import CLUSTER_NAME, GCS_PORT_OFFSET, HOST, ProcessSet
from gcs_ha.bench.cpu import Replica, RoleCpu
from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.consensus.replica import RaftReplica
from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.processes import Process, replica_command, spawn
from gcs_ha.secret import generate_secret_file, read_secret_file

log = logging.getLogger(__name__)

LEADER_TIMEOUT_S = 60.0


class BenchCluster:
    """r0 in this process (the leader), r1..r{n-1} as `gcs-ha start` processes."""

    def __init__(self, base_dir: Path, replicas: int, base_port: int, procs: ProcessSet) -> None:
        self.base_dir = base_dir
        self.n = replicas
        self.base_port = base_port
        self._procs = procs
        self._followers: dict[int, Process] = {}
        self.replica: RaftReplica | None = None

    def role_cpu(self) -> RoleCpu:
        """CPU by replica role: r0's front end is this process (the writers included)."""
        assert self.replica is not None
        r0 = Replica(os.getpid(), leader=True, consensus_pid=self.replica.consensus_pid)
        return RoleCpu([r0, *(Replica(p.pid, leader=False) for p in self._followers.values())])

    def raft_address(self, i: int) -> str:
        return f"{HOST}:{self.base_port + i}"

    def gcs_address(self, i: int) -> str:
        return f"{HOST}:{self.base_port + GCS_PORT_OFFSET + i}"

    def log_path(self, i: int) -> Path:
        return self.base_dir / "logs" / f"r{i}.log"

    async def __aenter__(self) -> RaftReplica:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        secret_file = self.base_dir / "cluster.secret"
        generate_secret_file(secret_file)
        for i in range(1, self.n):
            self._followers[i] = self._procs.add(
                spawn(self._command(i, secret_file), self.log_path(i))
            )
        config = ReplicaConfig(
            node_id="r0",
            data_dir=self.base_dir / "r0",
            raft_address=self.raft_address(0),
            gcs_address=self.gcs_address(0),
            peers=tuple(self.raft_address(i) for i in range(1, self.n)),
            secret=read_secret_file(secret_file),
            cluster_name=CLUSTER_NAME,
        )
        self.replica = RaftReplica(config)
        try:
            await self.replica.start()
            await self._make_r0_lead(self.replica)
        except BaseException:
            await self._stop()
            raise
        return self.replica

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """Stop r0 (if it got started) and every follower process."""
        replica, self.replica = self.replica, None
        try:
            if replica is not None:
                await replica.stop()
        finally:
            await asyncio.to_thread(self._procs.close)

    def _command(self, i: int, secret_file: Path) -> list[str]:
        return replica_command(
            node_id=f"r{i}",
            data_dir=self.base_dir / f"r{i}",
            raft_address=self.raft_address(i),
            gcs_address=self.gcs_address(i),
            peers=[self.raft_address(j) for j in range(self.n) if j != i],
            cluster_name=CLUSTER_NAME,
            secret_file=secret_file,
            log_level="warning",
        )

    async def _make_r0_lead(self, replica: RaftReplica) -> None:
        """Wait for a leader; if it is not r0, ask it to hand leadership to r0."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEADER_TIMEOUT_S
        while loop.time() < deadline:
            if await replica.wait_serving(0.5):
                log.info("r0 serves as leader")
                return
            self._check_followers()
            leader = await asyncio.to_thread(self._serving_follower)
            if leader is not None:
                key = admin_key(replica.config.secret) if replica.config.secret else None
                await asyncio.to_thread(_transfer_to_r0, self.gcs_address(leader), key)
        raise UnavailableError(
            f"r0 did not become the serving leader in {LEADER_TIMEOUT_S:.0f} s (are ports "
            f"{self.raft_address(0)}.. free? replica logs: {self.base_dir / 'logs'})"
        )

    def _check_followers(self) -> None:
        for i, proc in self._followers.items():
            if proc.poll() is not None:
                raise UnavailableError(
                    f"replica r{i} exited with code {proc.returncode}; see {self.log_path(i)}"
                )

    def _serving_follower(self) -> int | None:
        for i in self._followers:
            try:
                with AdminClient(self.gcs_address(i), timeout=1.0) as client:
                    if client.status().serving:
                        return i
            except GcsHaError:
                continue
        return None


def _transfer_to_r0(leader_gcs: str, key: bytes | None) -> None:
    """Ask the leader at `leader_gcs` to transfer leadership to r0 (best effort: r0 may
    not be registered yet; the caller retries). `key` signs the call."""
    try:
        with AdminClient(leader_gcs, timeout=10.0, key=key) as client:
            client.transfer_leadership("r0")
        log.info("leadership transferred from %s to r0", leader_gcs)
    except GcsHaError as exc:
        log.info("transfer to r0 not done yet: %s", exc)
