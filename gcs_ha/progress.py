"""Progress for the commands that run for minutes (`gcs-ha bench ...`, `gcs-ha drill`):
what the work reports (`Steps`: begin, advance, restart_clock, note; `QUIET` when nobody
watches) and when to draw. The estimate is gcs_ha/eta.py; the bar, on stderr with rich,
gcs_ha/progress_bar.py (imported only when a command runs).

    with for_command(flag, "bench kv", total=12, unit="points") as steps:
        steps.begin("ray-redis: put, 16 clients"); steps.advance(); steps.note("...")

Shown when asked (`--progress`) or when stderr is a terminal and the command is not
verbose; stdout is never touched. Nothing here raises on purpose.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

import click

if TYPE_CHECKING:
    from gcs_ha.progress_bar import WorkProgress

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class Steps(Protocol):
    """What long work reports as it goes."""

    def begin(self, what: str) -> None:
        """What runs now (shown next to the bar)."""

    def advance(self, units: float = 1.0) -> None:
        """`units` more of the total are done."""

    def restart_clock(self) -> None:
        """The units start now: time spent before (setting up) is not in the estimate."""

    def note(self, line: str) -> None:
        """A line worth keeping (a fault injected, a phase ended)."""


class _Quiet:
    """Steps for nobody: notes go to the log (INFO), the rest nowhere."""

    def begin(self, what: str) -> None:
        pass

    def advance(self, units: float = 1.0) -> None:
        pass

    def restart_clock(self) -> None:
        pass

    def note(self, line: str) -> None:
        log.info("%s", line)


QUIET: Steps = _Quiet()


def want_progress(flag: bool | None, stream: TextIO | None = None) -> bool:
    """--progress/--no-progress when given; else whether `stream` (stderr) is a terminal
    (and not a dumb one)."""
    if flag is not None:
        return flag
    stream = sys.stderr if stream is None else stream
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def progress_option(func: F) -> F:
    """The --progress/--no-progress option (None when not given)."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show progress with an ETA on stderr (default: when stderr is a terminal "
        "and -v is not given).",
    )(func)


def for_command(
    flag: bool | None,
    title: str,
    total: float,
    *,
    unit: str = "",
    planned_s: float | None = None,
    verbose: bool = False,
) -> WorkProgress:
    """The progress of a command given its --progress/--no-progress `flag`: drawn when
    want_progress(flag), even on a non-terminal when --progress was given. With
    `verbose` (-v) it is off unless asked for: the log lines are the progress then, and
    child processes that inherit stderr would write through the bar."""
    from gcs_ha.progress_bar import WorkProgress  # noqa: PLC0415  (rich: only when used)

    enabled = flag if flag is not None else not verbose and want_progress(None)
    return WorkProgress(
        title, total, unit=unit, planned_s=planned_s, enabled=enabled, force=bool(flag)
    )
