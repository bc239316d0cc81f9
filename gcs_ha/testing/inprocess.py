"""In-process replica clusters for integration tests and benchmarks.

Every replica is a real `RaftReplica` (real Raft over loopback TCP, real LMDB and journal
on disk) sharing the caller's asyncio loop; only the process is shared. For kill -9 and
power-loss drills use the process harness (gcs_ha.testing.cluster).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from pathlib import Path

from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.consensus.replica import RaftReplica
from gcs_ha.errors import UnavailableError


def replica_configs(
    base_dir: Path, n: int, raft_port: int, gcs_port: int, secret: bytes | None = None
) -> list[ReplicaConfig]:
    """Configs for an n-replica cluster on 127.0.0.1 with consecutive ports."""
    secret = secret if secret is not None else secrets.token_hex(16).encode()
    rafts = [f"127.0.0.1:{raft_port + i}" for i in range(n)]
    return [
        ReplicaConfig(
            node_id=f"r{i}",
            data_dir=base_dir / f"r{i}",
            raft_address=rafts[i],
            gcs_address=f"127.0.0.1:{gcs_port + i}",
            peers=tuple(a for a in rafts if a != rafts[i]),
            secret=secret,
        )
        for i in range(n)
    ]


class InProcessCluster:
    """N RaftReplicas on the running loop. Use `async with`."""

    def __init__(self, configs: list[ReplicaConfig]) -> None:
        self.configs = configs
        self.replicas: list[RaftReplica | None] = [None] * len(configs)

    async def __aenter__(self) -> InProcessCluster:
        # Together: each replica starts a consensus process (about 0.3 s of imports).
        started = await asyncio.gather(
            *(self.start(i) for i in range(len(self.configs))), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await self.stop_all()
            raise failed[0]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    async def start(self, i: int) -> RaftReplica:
        replica = RaftReplica(self.configs[i])
        await replica.start()
        self.replicas[i] = replica
        return replica

    async def stop(self, i: int) -> None:
        replica, self.replicas[i] = self.replicas[i], None
        if replica is not None:
            await replica.stop()

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(i) for i in range(len(self.replicas))))

    def running(self) -> list[RaftReplica]:
        return [r for r in self.replicas if r is not None]

    async def leader(self, timeout: float = 15.0) -> RaftReplica:
        """The serving leader, waiting for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for replica in self.running():
                if replica.is_serving():
                    return replica
            await asyncio.sleep(0.02)
        raise UnavailableError(f"no serving leader within {timeout} s")

    def index_of(self, replica: RaftReplica) -> int:
        return self.replicas.index(replica)

    async def wait_applied(self, index: int, timeout: float = 15.0) -> None:
        """Wait until every running replica applied at least `index`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if all(r.digest()[0] >= index for r in self.running()):
                return
            await asyncio.sleep(0.02)
        raise UnavailableError(f"replicas did not reach index {index} within {timeout} s")

    async def converged(self, timeout: float = 15.0) -> tuple[int, str]:
        """Wait until every running replica has the same (applied index, digest)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            digests = {r.digest() for r in self.running()}
            if len(digests) == 1:
                return digests.pop()
            if loop.time() > deadline:
                raise UnavailableError(f"replicas did not converge: {sorted(digests)}")
            await asyncio.sleep(0.05)

    def add_config(self, config: ReplicaConfig) -> int:
        self.configs.append(config)
        self.replicas.append(None)
        return len(self.configs) - 1

    def joiner_config(self, i: int, raft_port: int, gcs_port: int) -> ReplicaConfig:
        """A config for a new replica joining the current members."""
        base = self.configs[0]
        members = tuple(c.raft_address for c in self.configs)
        return replace(
            base,
            node_id=f"r{i}",
            data_dir=base.data_dir.parent / f"r{i}",
            raft_address=f"127.0.0.1:{raft_port}",
            gcs_address=f"127.0.0.1:{gcs_port}",
            peers=members,
            joining=True,
        )
