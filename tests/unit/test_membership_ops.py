"""MembershipOps directly (consensus/membership.py): its rules around the Raft calls, with
its collaborators in memory. `Link` stands in for the consensus process's link (the Raft
calls complete at once, as the link's DONE frames would) and records what was asked; the
store is the in-memory StoreClient. The Raft side itself is tested in test_raft_cluster.py
(simulated) and tests/integration/test_membership.py (real processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from gcs_ha.consensus.api import MemberInfo
from gcs_ha.consensus.ipc import RaftStatus
from gcs_ha.consensus.membership import MembershipDeps, MembershipOps, member_record
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.consensus.replica import member_from_record
from gcs_ha.errors import ConfigError, NotLeaderError, UnavailableError
from gcs_ha.storage.memory import InMemoryStoreClient
from gcs_ha.storage.store_client import MEMBERS_TABLE

ME = MemberInfo("r0", "10.0.0.1:7379", "10.0.0.1:6379")
R1 = MemberInfo("r1", "10.0.0.2:7379", "10.0.0.2:6379")
NEW = MemberInfo("r3", "10.0.0.4:7379", "10.0.0.4:6379")
Done = Callable[[Any, Any], None]


class Link:
    """The link's Raft calls, completed at once; `calls` in order."""

    def __init__(self, peers: tuple[str, ...]) -> None:
        self.calls: list[tuple[str, str]] = []
        self.leader = True
        self.current_term = 3
        self.status = self._status(peers, match={p: 9 for p in peers})
        self.gate: asyncio.Event | None = None  # set: add_node completes only when set

    def _status(self, peers: tuple[str, ...], match: dict[str, int]) -> RaftStatus:
        return RaftStatus(
            state=2, term=self.current_term, leader=ME.raft_address, commit_index=9,
            last_log_index=9, has_quorum=True, self_address=ME.raft_address, peers=peers,
            match_index=match, connected=frozenset(peers), taken_at=time.monotonic() + 1,
        )  # fmt: skip

    def add_node(self, address: str, done: Done) -> None:
        self.calls.append(("add", address))
        if self.gate is None:
            done(None, None)
        else:
            gate = self.gate
            asyncio.get_running_loop().create_task(_after(gate, done))

    def remove_node(self, address: str, done: Done) -> None:
        self.calls.append(("remove", address))
        done(None, None)

    def compact(self, done: Done) -> None:
        self.calls.append(("compact", ""))
        done(42, None)

    def transfer_leadership(self, address: str, done: Done) -> None:
        self.calls.append(("transfer", address))
        self.leader = False  # the follower won the election at once
        self.current_term += 1
        done(None, None)

    def term(self) -> int:
        return self.current_term

    def is_leader(self) -> bool:
        return self.leader


async def _after(gate: asyncio.Event, done: Done) -> None:
    await gate.wait()
    done(None, None)


class Env:
    def __init__(self, serving: bool = True) -> None:
        self.store = InMemoryStoreClient()
        self.link = Link(peers=(R1.raft_address,))
        self.serving = serving
        proposer = GroupCommitProposer(self._never, 4, 1 << 20, 1 << 20)
        deps = MembershipDeps(
            store=self.store,
            proposer=proposer,
            registered=lambda: self.table,
            me=lambda: ME,
            is_serving=lambda: self.serving,
            leader_hint=lambda: "10.0.0.2:6379",
        )
        self.table: dict[str, MemberInfo] = {"r0": ME, "r1": R1}
        self.ops = MembershipOps(deps, self.link)  # type: ignore[arg-type]

    @staticmethod
    def _never(data: bytes, done: Done) -> None:
        raise AssertionError("nothing is proposed through the proposer here")

    async def record(self, node_id: str) -> MemberInfo | None:
        value = await self.store.get(MEMBERS_TABLE, node_id.encode())
        return None if value is None else member_from_record(node_id, value)


def run(body: Callable[[Env], Any], serving: bool = True) -> Env:
    env = Env(serving)
    asyncio.run(body(env))
    return env


def test_a_new_member_is_added_after_a_snapshot_and_registered() -> None:
    async def body(env: Env) -> None:
        await env.ops.add(NEW, timeout=1)
        assert env.link.calls == [("compact", ""), ("add", NEW.raft_address)]
        assert await env.record("r3") == NEW

    run(body)


def test_adding_a_member_already_in_raft_only_registers_it() -> None:
    async def body(env: Env) -> None:
        del env.table["r1"]  # in Raft's configuration, not registered yet
        await env.ops.add(R1, timeout=1)
        assert env.link.calls == []  # no snapshot, no Raft change
        assert await env.record("r1") == R1
        env.table["r1"] = R1
        await env.ops.add(R1, timeout=1)  # again, the same: nothing to do
        assert env.link.calls == []

    run(body)


def test_a_clashing_member_is_refused_before_any_raft_call() -> None:
    async def body(env: Env) -> None:
        with pytest.raises(ConfigError):  # r1's Raft address under another node id
            await env.ops.add(MemberInfo("r9", R1.raft_address, "10.0.0.9:6379"), timeout=1)
        assert env.link.calls == []

    run(body)


def test_changes_go_to_the_leader() -> None:
    async def body(env: Env) -> None:
        with pytest.raises(NotLeaderError) as refused:
            await env.ops.add(NEW, timeout=1)
        assert refused.value.leader_hint == "10.0.0.2:6379"
        with pytest.raises(NotLeaderError):
            await env.ops.remove("r1", None, timeout=1)
        assert env.link.calls == []

    run(body, serving=False)


def test_one_membership_change_at_a_time() -> None:
    async def body(env: Env) -> None:
        env.link.gate = asyncio.Event()
        first = asyncio.create_task(env.ops.add(NEW, timeout=5))
        while ("add", NEW.raft_address) not in env.link.calls:
            await asyncio.sleep(0)
        with pytest.raises(UnavailableError, match="another membership change"):
            await env.ops.remove("r1", None, timeout=1)
        env.link.gate.set()
        await first
        await env.ops.remove("r1", None, timeout=1)  # the next one goes through
        assert env.link.calls[-1] == ("remove", R1.raft_address)

    run(body)


def test_a_member_removed_by_node_id_leaves_raft_and_the_table() -> None:
    async def body(env: Env) -> None:
        await env.store.put(MEMBERS_TABLE, b"r1", member_record(R1))
        await env.ops.remove("r1", None, timeout=1)
        assert env.link.calls == [("remove", R1.raft_address)]
        assert await env.record("r1") is None

    run(body)


def test_leadership_goes_to_a_caught_up_follower_and_proposals_are_held_meanwhile() -> None:
    async def body(env: Env) -> None:
        moved_to = await env.ops.transfer(None, timeout=2)
        assert moved_to == "r1"
        assert env.link.calls == [("transfer", R1.raft_address)]

    run(body)


def test_no_transfer_to_a_follower_that_is_behind() -> None:
    async def body(env: Env) -> None:
        peers = (R1.raft_address,)
        env.link.status = env.link._status(peers, match={R1.raft_address: 8})  # one behind
        with pytest.raises(UnavailableError, match="no follower caught up"):
            await env.ops.transfer("r1", timeout=0.3)
        assert env.link.calls == []
        with pytest.raises(ConfigError, match="no member with node id"):
            await env.ops.transfer("r7", timeout=0.3)

    run(body)
