"""RaftReplica in-process: replication, leadership, linearizable reads, snapshots, membership."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.replica import RaftReplica
from gcs_ha.errors import GcsHaError, NotLeaderError, UnavailableError
from gcs_ha.server.handoff import hand_off
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.testing.inprocess import InProcessCluster, replica_configs

RAFT_PORT = 25100
GCS_PORT = 25200


RUN_TIMEOUT_S = 120.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro`; a hang fails after RUN_TIMEOUT_S with the stack of every task."""

    async def watched() -> None:
        main = asyncio.ensure_future(coro)
        await asyncio.wait({main}, timeout=RUN_TIMEOUT_S)
        if main.done():
            return main.result()
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        main.cancel()
        pytest.fail(f"hung for {RUN_TIMEOUT_S} s; tasks:\n{stacks.getvalue()}")

    asyncio.run(watched())


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
            await c.leader()
            await asyncio.sleep(1.5)  # members registered
            # A noisy machine may elect again meanwhile; each attempt names the leader of
            # the moment and a follower that agrees with it, and a refusal must point there.
            for _ in range(5):
                leader = await c.leader()
                follower = next(r for r in c.running() if r is not leader)
                if follower.status().leader_node_id != leader.config.node_id:
                    await asyncio.sleep(0.5)
                    continue
                try:
                    await follower.store.put(KV_TABLE, b"a", b"b")
                except NotLeaderError as refused:
                    if leader.is_serving():
                        assert refused.leader_hint == leader.config.gcs_address
                        return
                await asyncio.sleep(0.5)  # leadership moved during the attempt
            pytest.fail("no stable leader to check a follower's refusal against")

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
            term = leader.status().term
            await leader.transfer_leadership(None)
            assert not leader.is_serving()  # done means: this replica stepped down
            new = await c.leader()
            if new is leader:  # the target's election failed (a loaded machine) and this
                # replica won a later one after stepping down; its status comes every 50 ms
                for _ in range(50):
                    if new.status().term >= term + 2:
                        break
                    await asyncio.sleep(0.02)
                assert new.status().term >= term + 2
            for _ in range(3):  # a read may meet another election on a loaded machine
                try:
                    assert await (await c.leader()).store.get(KV_TABLE, b"x") == b"1"
                    break
                except (NotLeaderError, UnavailableError):
                    await asyncio.sleep(0.5)
            else:
                pytest.fail("no read succeeded after the transfer")

    run(main())


def test_snapshot_catches_up_a_new_member(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The joiner installs the leader's snapshot (its consensus process replaces LMDB) and
    its front end reopens LMDB: its digest then matches the others'."""
    caplog.set_level(logging.INFO, logger="gcs_ha.consensus.replica")

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
    assert "reopened LMDB after a snapshot install" in caplog.text


async def registered(c: InProcessCluster, leader: RaftReplica, n: int) -> None:
    """Wait until every replica registered itself (their own writes are done)."""
    for _ in range(200):
        if len({m.node_id for m in leader.members()} - {""}) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("replicas did not register")


def test_reads_confirm_leadership_without_log_entries(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 3, RAFT_PORT + 50, GCS_PORT + 50)
        ) as c:
            leader = await c.leader()
            await registered(c, leader, 3)
            await leader.store.put(KV_TABLE, b"k", b"v")
            await asyncio.sleep(0.2)  # the status is sent every 50 ms
            before = leader.status().last_log_index
            confirmations = leader.read_confirmations
            values = await asyncio.gather(*(leader.store.get(KV_TABLE, b"k") for _ in range(300)))
            assert values == [b"v"] * 300
            await asyncio.sleep(0.2)
            assert leader.status().last_log_index == before  # no entry for any read
            assert 1 <= leader.read_confirmations - confirmations < 300  # rounds were shared

    run(main())


def test_a_leader_cut_off_from_its_followers_answers_no_read(tmp_path: Path) -> None:
    """ReadIndex: without a majority echoing a heartbeat sent after the read arrived, the
    read waits, until the leader steps down (leader fallback, 0.6 s) and refuses it."""

    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 3, RAFT_PORT + 60, GCS_PORT + 60)
        ) as c:
            leader = await c.leader()
            await leader.store.put(KV_TABLE, b"k", b"v")
            assert await leader.store.get(KV_TABLE, b"k") == b"v"
            stopped = [r.consensus_pid for r in c.running() if r is not leader]
            for pid in stopped:
                assert pid is not None
                os.kill(pid, signal.SIGSTOP)
            try:
                read = asyncio.ensure_future(leader.store.get(KV_TABLE, b"k"))
                await asyncio.sleep(0.3)
                assert not read.done()
                with pytest.raises(NotLeaderError):
                    await asyncio.wait_for(read, 5.0)
                assert not leader.is_serving()
            finally:
                for pid in stopped:
                    assert pid is not None
                    os.kill(pid, signal.SIGCONT)
            await c.leader()

    run(main())


def test_a_dead_consensus_process_stops_its_replica(tmp_path: Path) -> None:
    """The front end learns at once: it stops serving, fails what waits, reports the exit."""

    async def main() -> None:
        async with InProcessCluster(
            replica_configs(tmp_path, 1, RAFT_PORT + 70, GCS_PORT + 70)
        ) as c:
            leader = await c.leader()
            await leader.store.put(KV_TABLE, b"k", b"v")
            pid = leader.consensus_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if leader.lost_code is not None:
                    break
                await asyncio.sleep(0.05)
            assert leader.lost_code == -signal.SIGKILL
            assert not leader.is_serving()
            with pytest.raises((NotLeaderError, UnavailableError)):
                await leader.store.put(KV_TABLE, b"k2", b"v")

    run(main())


def test_a_stopping_leader_hands_off_to_a_caught_up_follower(tmp_path: Path) -> None:
    """server/handoff.py on real replicas: under writes, leadership goes to the follower it
    names, in the next term; writes held meanwhile fail as never proposed (NotLeaderError),
    never with an unknown outcome. A follower has nothing to hand off."""
    outcomes: list[object] = []

    async def writer(replica: RaftReplica, w: int) -> None:
        for i in itertools.count():
            try:
                outcomes.append(await replica.store.put(KV_TABLE, b"w%d-%d" % (w, i), b"v"))
            except GcsHaError as exc:
                outcomes.append(exc)
                return

    async def main() -> None:
        async with InProcessCluster(replica_configs(tmp_path, 3, 14060, 14070)) as c:
            leader = await c.leader()
            await registered(c, leader, 3)
            follower = next(r for r in c.running() if r is not leader)
            assert await hand_off(follower, 3.0) is None
            term = leader.status().term
            writers = [asyncio.create_task(writer(leader, w)) for w in range(8)]
            await asyncio.sleep(0.3)
            target = await hand_off(leader, 3.0)
            assert target is not None and target != leader.config.node_id
            assert not leader.is_serving()
            await asyncio.wait_for(asyncio.gather(*writers), 10)
            errors = [o for o in outcomes if not isinstance(o, bool)]
            assert len(errors) == 8 and all(isinstance(e, NotLeaderError) for e in errors), errors
            new = await c.leader()
            if new.config.node_id == target:  # else a loaded machine elected again
                assert new.status().term == term + 1

    run(main())
