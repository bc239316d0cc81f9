"""The placement group manager's pending queue: groups waiting for a scheduling attempt,
each due at a time (Ray's pending_placement_groups_, ranked by time).

A group is in the queue at most once: pushing it again keeps the earlier due time.
`front` puts it before every timed entry (Ray's rank 0, for groups that lost a node).
`backoff` re-queues a group after a failed attempt with Ray's exponential backoff
(gcs_create_placement_group_retry_{min,max}_interval_ms = 100 / 1000,
multiplier 1.5); `forget` resets its backoff once it is placed. `next` waits until a
group is due or `wake` is called (new capacity), then returns the first due group.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time

RETRY_MIN_S, RETRY_MAX_S, RETRY_MULTIPLIER = 0.1, 1.0, 1.5


class PendingQueue:
    """Placement group ids by due time; see the module docstring."""

    def __init__(
        self,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
        multiplier: float = RETRY_MULTIPLIER,
    ) -> None:
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._multiplier = multiplier
        self._heap: list[tuple[float, int, bytes]] = []
        self._due: dict[bytes, tuple[float, int]] = {}
        self._delay: dict[bytes, float] = {}
        self._seq = itertools.count()
        self._woken = asyncio.Event()

    def __contains__(self, pg_id: object) -> bool:
        return pg_id in self._due

    def __len__(self) -> int:
        return len(self._due)

    def ids(self) -> list[bytes]:
        """The queued ids, soonest first."""
        return [pg_id for _, pg_id in sorted((due, pg_id) for pg_id, due in self._due.items())]

    def push(self, pg_id: bytes, *, front: bool = False, delay_s: float = 0.0) -> None:
        """Queue the group (due now + delay_s, or before everything with `front`)."""
        due = (-math.inf if front else time.monotonic() + delay_s, next(self._seq))
        kept = self._due.get(pg_id)
        if kept is not None and kept <= due:
            return
        self._due[pg_id] = due
        heapq.heappush(self._heap, (*due, pg_id))
        self.wake()

    def backoff(self, pg_id: bytes) -> None:
        """Queue the group again after a failed attempt, each time later."""
        last = self._delay.get(pg_id)
        delay = (
            self._retry_min_s if last is None else min(self._retry_max_s, last * self._multiplier)
        )
        self._delay[pg_id] = delay
        self.push(pg_id, delay_s=delay)

    def forget(self, pg_id: bytes) -> None:
        """The group was placed: its next failure starts from the shortest backoff."""
        self._delay.pop(pg_id, None)

    def discard(self, pg_id: bytes) -> None:
        """Take the group out of the queue (removed)."""
        self._due.pop(pg_id, None)
        self._delay.pop(pg_id, None)

    def clear(self) -> None:
        self._heap.clear()
        self._due.clear()
        self._delay.clear()

    def wake(self) -> None:
        """Make `next` look again (new capacity, or a new group)."""
        self._woken.set()

    async def next(self) -> bytes:
        """The first group that is due, waiting for one if need be."""
        while True:
            self._woken.clear()
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][:2]:
                heapq.heappop(self._heap)  # superseded or discarded
            timeout = None
            if self._heap:
                due, _, pg_id = self._heap[0]
                timeout = due - time.monotonic()
                if timeout <= 0:
                    heapq.heappop(self._heap)
                    del self._due[pg_id]
                    return pg_id
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout)
