"""Linearizable reads on the front end: many reads share one ReadIndex confirmation.

`wait()` returns once the consensus process confirmed that this replica still leads and
its LMDB holds everything committed when the read arrived (read_index.py); the caller then
reads its LMDB reader. One READ is in flight at a time; reads that queue behind it go
together in the next, at most every `min_gap_s` (why: DESIGN.md, "Reads"). Loop thread only.

Errors: UnavailableError (retryable) for the reads of a round not answered within
`timeout_s`; a late answer to it is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.futures import settle_all

Done = Callable[[Any, GcsHaError | None], None]
Read = Callable[[Done], None]

MIN_GAP_S = 0.002
ROUND_TIMEOUT_S = 5.0


class ReadBarrier:
    def __init__(
        self, read: Read, min_gap_s: float = MIN_GAP_S, timeout_s: float = ROUND_TIMEOUT_S
    ) -> None:
        """`read(done)` asks the consensus process for one confirmation."""
        self._read = read
        self._gap = min_gap_s
        self._timeout_s = timeout_s
        self._queued: list[asyncio.Future[None]] = []
        self._inflight = False
        self._round = 0  # the round in flight (when _inflight)
        self._deadline: asyncio.TimerHandle | None = None
        self._last_sent = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self.confirmations = 0  # READ requests sent (observability: reads per request)

    async def wait(self) -> None:
        """Wait for a confirmation that covers a read arriving now. Raises NotLeaderError
        when this replica does not lead (anymore), UnavailableError when its consensus
        process is gone."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(future)
        if not self._inflight and self._timer is None:
            self._send()
        await future

    def _send(self) -> None:
        self._timer = None
        if self._inflight or not self._queued:
            return
        batch, self._queued = self._queued, []
        self._inflight = True
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        self.confirmations += 1
        self._round += 1
        round_id = self._round
        late = UnavailableError("the read confirmation did not come in time; retry")
        self._deadline = loop.call_later(self._timeout_s, self._done, round_id, batch, late)
        self._read(lambda _, error: self._done(round_id, batch, error))

    def _done(
        self, round_id: int, batch: list[asyncio.Future[None]], error: GcsHaError | None
    ) -> None:
        settle_all(batch, error)
        if not self._inflight or round_id != self._round:
            return  # the answer of a round that timed out
        self._inflight = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._queued:  # reads that arrived during the round: paced
            loop = asyncio.get_running_loop()
            wait = self._last_sent + self._gap - loop.time()
            if wait > 0:
                self._timer = loop.call_later(wait, self._send)
            else:
                self._send()
