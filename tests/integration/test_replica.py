"""RaftReplica in-process: replication, leadership, linearizable reads, snapshots, membership."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gcs_ha.consensus.api import MemberInfo
from gcs_ha.errors import NotLeaderError
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs

RAFT_PORT = 25100
GCS_PORT = 25200


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_writes_reach_every_replica(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(replica_configs(tmp_path, 3, RAFT_PORT, GCS_PORT)) as c:
            leader = await c.leader()
            await asyncio.gather(
                *(leader.store.put(KV_TABLE, b"k%d" % i, b"v%d" % i) for i in range(200))
            )
            assert await leader.store.get(KV_TABLE, b"k7") == b"v7"
            assert await leader.store.put(KV_TABLE, b"k7", b"new", overwrite=False) is False
            assert await leader.store.next_job_id() == 1
            assert await leader.store.next_job_id() == 2
            index, _ = leader.digest()
            await c.wait_applied(index)
            await c.converged()

    run(main())


def test_follower_refuses_with_leader_hint(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 3, RAFT_PORT + 10, GCS_PORT + 10)
        ) as c:
            leader = await c.leader()
            follower = next(r for r in c.running() if r is not leader)
            await asyncio.sleep(1.5)  # members registered
            with pytest.raises(NotLeaderError) as info:
                await follower.store.put(KV_TABLE, b"a", b"b")
            assert info.value.leader_hint == leader.config.gcs_address
            assert follower.status().leader_node_id == leader.config.node_id

    run(main())


def test_failover_keeps_acknowledged_writes(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 3, RAFT_PORT + 20, GCS_PORT + 20)
        ) as c:
            leader = await c.leader()
            for i in range(50):
                await leader.store.put(KV_TABLE, b"k%d" % i, b"v%d" % i)
            await c.stop(c.index_of(leader))
            new = await c.leader()
            assert new is not leader
            assert await new.store.get(KV_TABLE, b"k49") == b"v49"
            await new.store.put(KV_TABLE, b"after", b"1")
            assert len(await new.store.keys(KV_TABLE)) == 51

    run(main())


def test_transfer_leadership(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 3, RAFT_PORT + 30, GCS_PORT + 30)
        ) as c:
            leader = await c.leader()
            await leader.store.put(KV_TABLE, b"x", b"1")
            await leader.transfer_leadership(None)
            new = await c.leader()
            assert new is not leader
            assert await new.store.get(KV_TABLE, b"x") == b"1"

    run(main())


def test_snapshot_catches_up_a_new_member(tmp_path: Path) -> None:
    async def main() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT + 40, GCS_PORT + 40)
        async with InProcessCluster(configs) as c:
            leader = await c.leader()
            await asyncio.gather(
                *(leader.store.put(KV_TABLE, b"k%d" % i, b"v" * 100) for i in range(300))
            )
            snap_index = await leader.compact()
            assert snap_index > 0
            joiner = c.joiner_config(3, RAFT_PORT + 43, GCS_PORT + 43)
            idx = c.add_config(joiner)
            await c.start(idx)
            await leader.add_member(
                MemberInfo(joiner.node_id, joiner.raft_address, joiner.gcs_address)
            )
            await leader.store.put(KV_TABLE, b"last", b"1")
            index, _ = leader.digest()
            await c.wait_applied(index)
            await c.converged()
            assert len(leader.members()) == 4
            for _ in range(200):  # every replica registers itself once it knows a leader
                if {m.node_id for m in leader.members()} == {"r0", "r1", "r2", "r3"}:
                    break
                await asyncio.sleep(0.05)
            assert {m.node_id for m in leader.members()} == {"r0", "r1", "r2", "r3"}

    run(main())
