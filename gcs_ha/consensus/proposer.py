"""Group commit on the asyncio side: many concurrent requests ride in one Raft entry.

Callers `submit()` a request and await its result; while fewer than `max_inflight`
entries are in flight, everything queued becomes one `LogEntry` (up to `max_entry_bytes`)
handed to `propose`. On demotion `fail_all()` fails everything pending or in flight with
a retryable error. See DESIGN.md, "The write path".

Errors: ResourceExhaustedError (gRPC RESOURCE_EXHAUSTED) at once for a request beyond
`max_queued_bytes` of queued requests, or a put the store has no room for (capacity.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gcs_ha.consensus import envelope
from gcs_ha.errors import (
    GcsHaError,
    InvalidRequestError,
    ResourceExhaustedError,
    UnknownOutcomeError,
)
from gcs_ha.proto import raft_log_pb2 as pb

# propose(entry bytes, done callback) -> None; the callback is called on the loop with
# (results, None) on success or (None, error) on failure.
Done = Callable[[list[pb.Result] | None, GcsHaError | None], None]
Propose = Callable[[bytes, Done], None]
MAX_QUEUED_BYTES = 256 * 2**20


@dataclass
class _Batch:
    # Each future with the position of its request's result.
    futures: list[tuple[asyncio.Future[pb.Result], int]] = field(default_factory=list)
    requests: list[pb.Request] = field(default_factory=list)


class GroupCommitProposer:
    """Batches requests into log entries. Not thread-safe: use from the event loop only."""

    def __init__(
        self,
        propose: Propose,
        max_inflight: int,
        max_entry_bytes: int,
        max_request_bytes: int,
        *,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        admit: Callable[[pb.Request], None] | None = None,
        entry_version: Callable[[], int] = lambda: envelope.BASE_VERSION,
    ) -> None:
        """`max_entry_bytes` bounds a batch of several requests; one request alone may be
        as large as `max_request_bytes` (it then travels in an entry of its own).
        `max_queued_bytes` bounds the requests waiting to be proposed. `admit(request)`
        raises for a request that must not be proposed (capacity.py). `entry_version()`:
        the format each entry is written in (the cluster version, versions.py)."""
        self._propose = propose
        self._entry_version = entry_version
        self._admit = admit
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        self._max_inflight = max_inflight
        self._max_entry_bytes = max_entry_bytes
        self._max_request_bytes = max_request_bytes
        self._queue: deque[tuple[pb.Request, asyncio.Future[pb.Result]]] = deque()
        self._inflight: set[int] = set()
        self._batches: dict[int, _Batch] = {}
        self._next_id = 0
        self._held = False
        self.entries_proposed = 0
        self.requests_proposed = 0
        self.requests_failed = 0  # completed with an error, or failed while queued

    async def submit(self, request: pb.Request) -> pb.Result:
        """Propose `request`; returns its Result once applied on this replica."""
        size = envelope.request_size(request)
        if size > self._max_request_bytes:
            raise InvalidRequestError(
                f"request of {size} bytes exceeds the {self._max_request_bytes}-byte entry limit"
            )
        if self._queue and self._queued_bytes + size > self._max_queued_bytes:
            raise ResourceExhaustedError(
                f"{len(self._queue)} requests ({self._queued_bytes} bytes) already wait to "
                "be proposed; retry later"
            )
        if self._admit is not None:
            self._admit(request)
        future: asyncio.Future[pb.Result] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._queued_bytes += size
        self._pump()
        return await future

    @property
    def queued_bytes(self) -> int:
        """Bytes of the requests waiting to be proposed."""
        return self._queued_bytes

    @property
    def inflight(self) -> int:
        """Entries proposed and not completed yet."""
        return len(self._inflight)

    @property
    def pending_requests(self) -> int:
        """Requests queued or in flight."""
        return len(self._queue) + sum(len(b.requests) for b in self._batches.values())

    def hold(self) -> None:
        """Stop proposing new entries (requests queue up) until `release()`; entries in
        flight complete as usual. Used to let a follower catch up before a leadership
        transfer."""
        self._held = True

    def release(self) -> None:
        """Resume proposing after `hold()`."""
        self._held = False
        self._pump()

    def fail_all(self, error: GcsHaError, queued_error: GcsHaError | None = None) -> None:
        """Fail every request (leadership lost): those in flight with `error` (they may
        have committed), those still queued with `queued_error` (they were never proposed;
        defaults to `error`)."""
        for _, future in self._queue:
            self.requests_failed += _fail(future, queued_error or error)
        self._queue.clear()
        self._queued_bytes = 0
        for batch in self._batches.values():
            for future, _ in batch.futures:
                self.requests_failed += _fail(future, error)
        self._batches.clear()
        self._inflight.clear()
        self._held = False

    def _pump(self) -> None:
        while self._queue and not self._held and len(self._inflight) < self._max_inflight:
            batch = self._take_batch()
            batch_id = self._next_id
            self._next_id += 1
            self._inflight.add(batch_id)
            self._batches[batch_id] = batch
            self.entries_proposed += 1
            self.requests_proposed += len(batch.requests)
            data = envelope.encode(batch.requests, self._entry_version())
            self._propose(data, functools.partial(self._complete, batch_id))

    def _take_batch(self) -> _Batch:
        batch = _Batch()
        size = 0
        while self._queue:
            request, future = self._queue[0]
            cost = envelope.request_size(request)
            if batch.futures and size + cost > self._max_entry_bytes:
                break
            self._queue.popleft()
            self._queued_bytes -= cost
            if future.done():  # cancelled by its caller
                continue
            size += cost
            batch.futures.append((future, len(batch.requests)))
            batch.requests.append(request)
        return batch

    def _complete(
        self, batch_id: int, results: list[pb.Result] | None, error: GcsHaError | None
    ) -> None:
        self._inflight.discard(batch_id)
        batch = self._batches.pop(batch_id, None)
        if batch is not None:
            self.requests_failed += _resolve(batch, results, error)
        self._pump()


def _resolve(batch: _Batch, results: list[pb.Result] | None, error: GcsHaError | None) -> int:
    """Complete the batch's requests; returns how many failed."""
    failed = 0
    for future, position in batch.futures:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        elif results is None or position >= len(results):
            future.set_exception(UnknownOutcomeError("the entry was applied without results"))
        else:
            future.set_result(results[position])
            continue
        failed += 1
    return failed


def _fail(future: asyncio.Future[pb.Result], error: GcsHaError) -> int:
    """Fail `future` unless done; 1 if it was failed here."""
    if future.done():
        return 0
    future.set_exception(error)
    return 1
