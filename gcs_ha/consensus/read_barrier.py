"""Linearizable reads on the front end: many reads share one ReadIndex confirmation.

`wait()` returns once the consensus process confirmed that this replica still leads and
its LMDB holds everything committed when the read arrived (read_index.py); the caller then
reads its LMDB reader. One READ request is in flight at a time: the reads that arrive
meanwhile wait for the next one (the one in flight may have been registered before them),
which then answers all of them at once. Loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gcs_ha.errors import GcsHaError

Done = Callable[[Any, GcsHaError | None], None]
Read = Callable[[Done], None]


class ReadBarrier:
    def __init__(self, read: Read) -> None:
        """`read(done)` asks the consensus process for one confirmation."""
        self._read = read
        self._queued: list[asyncio.Future[None]] = []
        self._inflight = False
        self.confirmations = 0  # READ requests sent (observability: reads per request)

    async def wait(self) -> None:
        """Wait for a confirmation that covers a read arriving now. Raises NotLeaderError
        when this replica does not lead (anymore), UnavailableError when its consensus
        process is gone."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(future)
        self._pump()
        await future

    def _pump(self) -> None:
        if self._inflight or not self._queued:
            return
        batch, self._queued = self._queued, []
        self._inflight = True
        self.confirmations += 1
        self._read(lambda _, error: self._done(batch, error))

    def _done(self, batch: list[asyncio.Future[None]], error: GcsHaError | None) -> None:
        self._inflight = False
        for future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        self._pump()
