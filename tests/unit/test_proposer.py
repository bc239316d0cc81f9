"""Group commit: batching while an entry is in flight, and the bounded queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gcs_ha.consensus import envelope
from gcs_ha.consensus.proposer import Done, GroupCommitProposer
from gcs_ha.errors import ResourceExhaustedError, UnknownOutcomeError
from gcs_ha.proto import raft_log_pb2 as pb


class Link:
    """Stands in for the consensus process: keeps each proposed entry until `commit`."""

    def __init__(self) -> None:
        self.entries: list[tuple[pb.LogEntry, Done]] = []

    def propose(self, data: bytes, done: Done) -> None:
        self.entries.append((envelope.decode(data), done))

    def commit(self) -> int:
        """Complete the oldest entry (every Put added); its request count."""
        entry, done = self.entries.pop(0)
        done([pb.Result(added=True) for _ in entry.requests], None)
        return len(entry.requests)


def put(i: int, size: int = 10) -> pb.Request:
    return envelope.put("kv", b"k%d" % i, b"v" * size, True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_requests_arriving_during_an_entry_ride_in_the_next_one() -> None:
    async def main() -> None:
        link = Link()
        proposer = GroupCommitProposer(link.propose, 1, 2**20, 2**20)
        first = asyncio.ensure_future(proposer.submit(put(0)))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(proposer.submit(put(i))) for i in range(1, 51)]
        await asyncio.sleep(0)
        assert len(link.entries) == 1  # one in flight; the 50 wait
        assert link.commit() == 1
        await asyncio.sleep(0)
        assert link.commit() == 50
        results = await asyncio.gather(first, *rest)
        assert all(r.added for r in results)

    run(main())


def test_the_queue_is_bounded_and_refuses_at_once() -> None:
    async def main() -> None:
        link = Link()
        size = envelope.request_size(put(0, 1000))
        proposer = GroupCommitProposer(link.propose, 1, 2**20, 2**20, max_queued_bytes=3 * size)
        calls = [asyncio.ensure_future(proposer.submit(put(i, 1000))) for i in range(6)]
        await asyncio.sleep(0)
        # One proposed at once, three queued (the bound), two refused before proposing.
        refused = [c for c in calls if c.done()]
        assert len(refused) == 2
        for call in refused:
            with pytest.raises(ResourceExhaustedError, match="already wait to be proposed"):
                call.result()
        assert proposer.queued_bytes == 3 * size
        link.commit()
        await asyncio.sleep(0)
        assert proposer.queued_bytes == 0  # the three went out together
        assert link.commit() == 3
        done = await asyncio.gather(*(c for c in calls if c not in refused))
        assert all(r.added for r in done)
        later = asyncio.ensure_future(proposer.submit(put(9, 1000)))
        await asyncio.sleep(0)
        link.commit()
        assert (await later).added

    run(main())


def test_a_request_alone_is_never_refused_by_the_bound() -> None:
    async def main() -> None:
        link = Link()
        proposer = GroupCommitProposer(link.propose, 1, 2**20, 2**20, max_queued_bytes=10)
        call = asyncio.ensure_future(proposer.submit(put(0, 1000)))
        await asyncio.sleep(0)
        link.commit()
        assert (await call).added

    run(main())


def test_fail_all_empties_the_queue() -> None:
    async def main() -> None:
        link = Link()
        proposer = GroupCommitProposer(link.propose, 1, 2**20, 2**20)
        calls = [asyncio.ensure_future(proposer.submit(put(i))) for i in range(3)]
        await asyncio.sleep(0)
        proposer.fail_all(UnknownOutcomeError("leader lost"))
        assert proposer.queued_bytes == 0
        for call in calls:
            with pytest.raises(UnknownOutcomeError):
                await call

    run(main())
