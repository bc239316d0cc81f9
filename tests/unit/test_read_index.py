"""ReadIndex: the consensus side's groups of reads (read_index.py) and the front end's one
confirmation in flight (read_barrier.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gcs_ha.consensus.read_barrier import ReadBarrier
from gcs_ha.consensus.read_index import EVERY_TAG, ReadIndex, majority_tag
from gcs_ha.errors import GcsHaError, NotLeaderError, UnavailableError


def test_majority_counts_this_node_as_holding_every_tag() -> None:
    assert majority_tag({}, []) == EVERY_TAG  # alone: a majority by itself
    assert majority_tag({"b": 4, "c": 1}, ["b", "c"]) == 4  # 3 nodes: one more is enough
    assert majority_tag({"b": 4}, ["b"]) == 4  # 2 nodes: both
    assert majority_tag({"b": 4, "c": 3}, ["b", "c", "d", "e"]) == 3  # 5 nodes: two more
    assert majority_tag({"b": 4}, ["b", "c", "d", "e"]) == 0


def test_reads_share_a_tag_until_it_was_sent() -> None:
    reads = ReadIndex()
    assert reads.register(1, read_index=10, newest_tag_sent=False) == 1
    assert reads.register(2, read_index=12, newest_tag_sent=False) is None  # same round
    assert reads.register(3, read_index=12, newest_tag_sent=True) == 2  # the next round
    assert len(reads) == 3
    voters = ["b", "c"]
    assert reads.ready({}, voters, applied=100) == []  # nobody echoed
    assert reads.ready({"b": 1}, voters, applied=11) == []  # read index 12 not applied
    assert reads.ready({"b": 1}, voters, applied=12) == [1, 2]
    assert reads.ready({"b": 1, "c": 1}, voters, applied=12) == []  # tag 2 not echoed
    assert reads.ready({"c": 2}, voters, applied=12) == [3]
    assert len(reads) == 0


def test_an_echo_of_an_older_tag_confirms_nothing_newer() -> None:
    reads = ReadIndex()
    reads.register(1, 5, newest_tag_sent=True)
    reads.ready({"b": 1}, ["b", "c"], 5)
    assert reads.register(2, 5, newest_tag_sent=True) == 2
    assert reads.ready({"b": 1, "c": 1}, ["b", "c"], 5) == []


def test_losing_leadership_fails_every_waiting_read() -> None:
    reads = ReadIndex()
    reads.register(1, 5, newest_tag_sent=False)
    reads.register(2, 5, newest_tag_sent=True)
    assert reads.fail_all() == [1, 2]
    assert reads.ready({}, [], 100) == []
    assert reads.register(3, 5, newest_tag_sent=True) == 3  # tags keep growing


class FakeConsensus:
    """Stands in for the link: records READ requests, answers them when told."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def read(self, done: Any) -> None:
        self.pending.append(done)

    def answer(self, error: GcsHaError | None = None) -> None:
        self.pending.pop(0)(None, error)


def test_one_confirmation_in_flight_covers_the_reads_queued_behind_it() -> None:
    async def main() -> None:
        consensus = FakeConsensus()
        barrier = ReadBarrier(consensus.read, min_gap_s=0.0)
        first = asyncio.ensure_future(barrier.wait())
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(barrier.wait()) for _ in range(5)]
        await asyncio.sleep(0)
        assert len(consensus.pending) == 1  # the later reads wait for the next round
        consensus.answer()
        await asyncio.sleep(0)
        assert first.done() and not any(f.done() for f in later)
        assert len(consensus.pending) == 1  # one READ for all five
        consensus.answer(NotLeaderError("deposed"))
        await asyncio.sleep(0)
        for future in later:
            with pytest.raises(NotLeaderError):
                future.result()
        assert barrier.confirmations == 2

    asyncio.run(main())


def test_reads_queued_behind_a_round_are_paced_and_a_lone_read_is_not() -> None:
    async def main() -> None:
        consensus = FakeConsensus()
        barrier = ReadBarrier(consensus.read, min_gap_s=0.2)
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(barrier.wait())
        await asyncio.sleep(0)
        queued = asyncio.ensure_future(barrier.wait())  # arrives during the round
        await asyncio.sleep(0)
        sent_first = loop.time()
        consensus.answer()
        await first
        await asyncio.sleep(0.05)
        assert consensus.pending == []  # held: the previous READ went out < 0.2 s ago
        while not consensus.pending:
            await asyncio.sleep(0.01)
        assert loop.time() - sent_first >= 0.19
        consensus.answer()
        await queued
        await asyncio.sleep(0.3)
        lone = asyncio.ensure_future(barrier.wait())  # nothing in flight: at once
        await asyncio.sleep(0)
        assert len(consensus.pending) == 1
        consensus.answer()
        await lone

    asyncio.run(main())


def test_a_round_never_answered_fails_its_reads_and_frees_the_barrier() -> None:
    async def main() -> None:
        consensus = FakeConsensus()
        barrier = ReadBarrier(consensus.read, min_gap_s=0.0, timeout_s=0.1)
        lost = asyncio.ensure_future(barrier.wait())
        await asyncio.sleep(0.15)  # its READ is never answered
        with pytest.raises(UnavailableError, match="did not come in time"):
            lost.result()
        late_answer = consensus.pending.pop(0)
        fresh = asyncio.ensure_future(barrier.wait())
        await asyncio.sleep(0)
        assert len(consensus.pending) == 1  # a new round went out at once
        late_answer(None, None)  # the old round's answer: ignored
        await asyncio.sleep(0)
        assert not fresh.done()
        consensus.answer()
        await fresh
        assert barrier.confirmations == 2

    asyncio.run(main())
