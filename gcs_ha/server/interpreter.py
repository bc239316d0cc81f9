"""Interpreter settings of a replica process, so the Raft thread keeps its timing under load.

pysyncobj runs Raft in a Python thread of the same process as the asyncio loop that serves
gRPC and runs the managers. Every Raft deadline (heartbeats every 50 ms, elections after
0.3-0.6 s of silence, a leader's 1.5 s fallback) therefore depends on that thread getting
the GIL in time. Two interpreter defaults break that under a burst of Ray calls (measured
with `gcs-ha bench actors`, 5,000-10,000 actors registered on gcs-ha-3; docs/benchmarks.md):

- The GIL switch interval (5 ms). A thread that blocked on I/O (a socket send, an fsync)
  waits up to one interval to get the GIL back from the busy loop thread; a Raft tick does
  dozens of such calls, so leader ticks took 200-500 ms and followers, hearing nothing,
  started elections. SWITCH_INTERVAL_S = 0.5 ms bounds each wait ten times lower.
- The cyclic garbage collector's thresholds (700, 10, 10). Thousands of calls in flight
  survive young collections, are promoted, then die; the oldest generation kept looking
  25% larger than at its last collection, so full collections ran every 0.5-1 s and took
  200-450 ms each, with every thread stopped. GC_THRESHOLDS collect the young generation
  every 50,000 allocations (most call objects die before that, by reference counting) and
  run a full collection a thousand times less often.

With both, 10,000 actors registered on gcs-ha-3 with no election (before: 1-9 elections
in every run, and some actors never created). `gc.freeze()` at start moves the objects
that live as long as the process (modules, classes, functions) out of every collection.
A collection that still takes GC_PAUSE_WARN_S or more is logged: the Raft thread stood
still that long.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLDS = (50_000, 50, 100)
GC_PAUSE_WARN_S = 0.2


class GcPauseLog:
    """A `gc.callbacks` entry that logs collections of GC_PAUSE_WARN_S or more."""

    def __init__(
        self, warn_s: float = GC_PAUSE_WARN_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._warn_s = warn_s
        self._clock = clock
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:
            return
        took, self._started = self._clock() - self._started, None
        if took >= self._warn_s:
            log.warning(
                "garbage collection of generation %s took %.0f ms (every thread, Raft's "
                "too, was stopped); %s objects collected",
                info.get("generation"),
                took * 1000,
                info.get("collected"),
            )


def tune_interpreter() -> None:
    """Apply the settings above to this process (call once, before the replica starts)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    if not any(isinstance(cb, GcPauseLog) for cb in gc.callbacks):
        gc.callbacks.append(GcPauseLog())
