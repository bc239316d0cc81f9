"""Membership changes on real replicas (in process): one at a time, no address taken
over, an interrupted join undone by Raft address, a dead member removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.replica import RaftReplica
from gcs_ha.errors import ConfigError, UnavailableError
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs

RAFT_PORT = 25600
GCS_PORT = 25700


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def all_registered(leader: RaftReplica, n: int) -> None:
    for _ in range(300):
        if len({m.node_id for m in leader.members()} - {""}) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"members did not register: {leader.members()}")


def raft_members(replica: RaftReplica) -> set[str]:
    return {m.raft_address for m in replica.members()}


async def raft_membership(replica: RaftReplica, included: set[str], excluded: set[str]) -> None:
    """Wait until the consensus process's status (sent every 50 ms) shows the change."""
    for _ in range(100):
        members = raft_members(replica)
        if members >= included and not members & excluded:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"Raft membership {sorted(raft_members(replica))}")


def test_membership_changes_run_one_at_a_time(tmp_path: Path) -> None:
    """Two adds at once: one goes through, the other is told to retry (UNAVAILABLE);
    retried, it goes through too. Writes are served meanwhile."""

    async def main() -> None:
        async with InProcessCluster(replica_configs(tmp_path, 3, RAFT_PORT, GCS_PORT)) as c:
            leader = await c.leader()
            await all_registered(leader, 3)
            a = MemberInfo("r3", f"127.0.0.1:{RAFT_PORT + 3}", f"127.0.0.1:{GCS_PORT + 3}")
            b = MemberInfo("r4", f"127.0.0.1:{RAFT_PORT + 4}", f"127.0.0.1:{GCS_PORT + 4}")
            writes = asyncio.gather(
                *(leader.store.put(KV_TABLE, b"k%d" % i, b"v") for i in range(50))
            )
            results = await asyncio.gather(
                leader.add_member(a), leader.add_member(b), return_exceptions=True
            )
            assert results[0] is None
            assert isinstance(results[1], UnavailableError)
            assert "another membership change" in str(results[1])
            await writes
            await leader.add_member(b)  # a majority of 5 is 3: the 3 running suffice
            await raft_membership(leader, {a.raft_address, b.raft_address}, set())
            assert set(leader.registered_members()) == {"r0", "r1", "r2", "r3", "r4"}
            await leader.add_member(a)  # again, same addresses: a no-op
            assert len(leader.members()) == 5

    run(main())


def test_no_member_takes_over_another_members_address(tmp_path: Path) -> None:
    async def main() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT + 10, GCS_PORT + 10)
        async with InProcessCluster(configs) as c:
            leader = await c.leader()
            await all_registered(leader, 3)
            before = (leader.members(), leader.registered_members())
            r1 = leader.registered_members()["r1"]
            clashes = [
                MemberInfo("r9", r1.raft_address, "127.0.0.1:9"),
                MemberInfo("r9", "127.0.0.1:9", r1.gcs_address),
                MemberInfo("r1", "127.0.0.1:9", r1.gcs_address),
            ]
            for clash in clashes:
                with pytest.raises(ConfigError):
                    await leader.add_member(clash)
            assert (leader.members(), leader.registered_members()) == before

    run(main())


def test_an_interrupted_join_is_undone_by_raft_address_and_a_dead_member_removed(
    tmp_path: Path,
) -> None:
    """A member Raft added but that never ran nor registered (a join cut short) is
    removed by its Raft address; a registered member that is dead is removed by node id;
    the two left still serve."""

    async def main() -> None:
        configs = replica_configs(tmp_path, 3, RAFT_PORT + 20, GCS_PORT + 20)
        async with InProcessCluster(configs) as c:
            leader = await c.leader()
            await all_registered(leader, 3)
            ghost = f"127.0.0.1:{RAFT_PORT + 29}"
            # What `add` does before it registers the member: the Raft change alone.
            await leader._membership._call(lambda done: leader._link.add_node(ghost, done), 10)
            await raft_membership(leader, {ghost}, set())
            assert MemberInfo("", ghost, "") in leader.members()
            await leader.remove_member(None, ghost)
            await raft_membership(leader, set(), {ghost})
            dead = next(r for r in c.running() if r is not leader)
            await c.stop(c.index_of(dead))
            await leader.remove_member(dead.config.node_id)
            await raft_membership(leader, set(), {dead.config.raft_address})
            assert dead.config.node_id not in leader.registered_members()
            await leader.store.put(KV_TABLE, b"after", b"1")
            assert await leader.store.get(KV_TABLE, b"after") == b"1"

    run(main())
