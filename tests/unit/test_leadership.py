"""Leadership: a barrier before serving, immediate demotion, listeners; over the real
GroupCommitProposer with a stand-in for the consensus process (no Raft needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gcs_ha.consensus import envelope
from gcs_ha.consensus.leadership import LEADER_STATE, Leadership
from gcs_ha.consensus.proposer import Done, GroupCommitProposer
from gcs_ha.errors import NotLeaderError, UnavailableError, UnknownOutcomeError
from gcs_ha.proto import raft_log_pb2 as pb

FOLLOWER = 0


class Link:
    """Keeps every proposed entry until the test completes it."""

    def __init__(self) -> None:
        self.entries: list[tuple[pb.LogEntry, Done]] = []

    def propose(self, data: bytes, done: Done) -> None:
        self.entries.append((envelope.decode(data), done))

    def complete(self, error: Any = None) -> pb.LogEntry:
        entry, done = self.entries.pop(0)
        done(None if error else [pb.Result(done=True) for _ in entry.requests], error)
        return entry


class Listener:
    def __init__(self) -> None:
        self.events: list[object] = []

    def on_serving(self, term: int) -> None:
        self.events.append(("serving", term))

    def on_demoted(self) -> None:
        self.events.append("demoted")


class Raft:
    """What Leadership asks of Raft: does this replica lead `term`?"""

    def __init__(self) -> None:
        self.term: int | None = None

    def is_leader_of(self, term: int) -> bool:
        return self.term == term


def make() -> tuple[Leadership, Link, Raft, Listener, GroupCommitProposer]:
    link, raft, listener = Link(), Raft(), Listener()
    proposer = GroupCommitProposer(link.propose, 1, 2**20, 2**20)
    lead = Leadership("node-1", proposer, raft.is_leader_of)
    lead.add_listener(listener)
    return lead, link, raft, listener, proposer


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_it_serves_only_once_the_barrier_of_its_term_is_applied() -> None:
    async def main() -> None:
        lead, link, raft, listener, _ = make()
        raft.term = 7
        lead.on_state_changed(FOLLOWER, LEADER_STATE, 7)
        await settle()
        (request,) = link.entries[0][0].requests
        assert request.WhichOneof("op") == "barrier"
        assert request.barrier.term == 7
        assert not lead.is_serving() and listener.events == []
        link.complete()
        await settle()
        assert lead.is_serving() and lead.serving_term == 7
        assert listener.events == [("serving", 7)]
        assert await lead.wait_serving(0.1)

    asyncio.run(main())


def test_demotion_stops_serving_at_once_and_fails_what_waits() -> None:
    async def main() -> None:
        lead, link, raft, listener, proposer = make()
        raft.term = 3
        lead.on_state_changed(FOLLOWER, LEADER_STATE, 3)
        await settle()
        link.complete()
        await settle()
        inflight = asyncio.ensure_future(proposer.submit(envelope.put("KV", b"a", b"v", True)))
        await settle()
        queued = asyncio.ensure_future(proposer.submit(envelope.put("KV", b"b", b"v", True)))
        await settle()
        raft.term = None
        lead.on_state_changed(LEADER_STATE, FOLLOWER, 4)
        assert not lead.is_serving() and lead.serving_term is None
        assert listener.events == [("serving", 3), "demoted"]
        with pytest.raises(UnknownOutcomeError):
            await inflight  # proposed: it may have committed
        with pytest.raises(NotLeaderError):
            await queued  # never proposed
        assert not await lead.wait_serving(0.01)

    asyncio.run(main())


def test_a_barrier_applied_after_the_term_ended_does_not_serve() -> None:
    async def main() -> None:
        lead, link, raft, listener, _ = make()
        raft.term = 5
        lead.on_state_changed(FOLLOWER, LEADER_STATE, 5)
        await settle()
        raft.term = 6  # another term began (pysyncobj's state change not delivered yet)
        link.complete()
        await settle()
        assert not lead.is_serving() and listener.events == []

    asyncio.run(main())


def test_a_failed_barrier_is_retried_while_it_leads() -> None:
    async def main() -> None:
        lead, link, raft, listener, _ = make()
        raft.term = 2
        lead.on_state_changed(FOLLOWER, LEADER_STATE, 2)
        await settle()
        link.complete(UnavailableError("no quorum yet"))
        await asyncio.sleep(0.06)  # the retry pause
        await settle()
        assert len(link.entries) == 1  # proposed again
        link.complete()
        await settle()
        assert listener.events == [("serving", 2)]

    asyncio.run(main())


def test_a_failing_listener_does_not_keep_the_others_from_the_event() -> None:
    class Broken(Listener):
        def on_serving(self, term: int) -> None:
            raise RuntimeError("listener bug")

    async def main() -> None:
        link, raft, listener = Link(), Raft(), Listener()
        lead = Leadership(
            "n", GroupCommitProposer(link.propose, 1, 2**20, 2**20), raft.is_leader_of
        )
        lead.add_listener(Broken())
        lead.add_listener(listener)
        raft.term = 1
        lead.on_state_changed(FOLLOWER, LEADER_STATE, 1)
        await settle()
        link.complete()
        await settle()
        assert listener.events == [("serving", 1)]
        assert lead.is_serving()

    asyncio.run(main())
