"""The time left of long work (`Eta`), for gcs_ha/progress.py and its bar.

The ETA is the average time per unit so far times the units left, less the time already
spent on the unit under way, but never less than the units after it would take (rich's
own estimate looks at the last 30 s only, shorter than a benchmark point or a drill
fault). Before the first unit it is the planned time when the caller knows one, else
unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass
class Eta:
    """The time left of `total` units of work (see the module docstring), on `clock`."""

    total: float
    planned_s: float | None = None
    clock: Clock = time.monotonic
    done: float = 0.0
    started: float = field(init=False)
    done_at: float = field(init=False, default=0.0)  # elapsed when `done` last grew

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def restart(self) -> None:
        """Measure from now on, from nothing done (setting up is not a unit of the work)."""
        self.started, self.done, self.done_at = self.clock(), 0.0, 0.0

    def advance(self, units: float) -> None:
        if units > 0:
            self.done = min(self.total, self.done + units)
            self.done_at = self.elapsed()

    def remaining_s(self) -> float | None:
        """Seconds left; None while nothing is done and nothing was planned."""
        if self.done >= self.total:
            return 0.0
        if self.done <= 0:
            return None if self.planned_s is None else max(0.0, self.planned_s - self.elapsed())
        per_unit = self.done_at / self.done
        left = self.total - self.done
        in_unit = self.elapsed() - self.done_at
        return max(per_unit * left - in_unit, per_unit * max(0.0, left - 1.0))


def clock_text(seconds: float | None) -> str:
    """h:mm:ss (rounded up to the second), or "?" when unknown."""
    if seconds is None:
        return "?"
    whole = int(-(-seconds // 1))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
