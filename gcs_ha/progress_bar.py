"""The progress bar of gcs_ha.progress, drawn on stderr with rich: a line with the
counts, the time so far and the ETA, and under it what runs now; erased at the end.

    with WorkProgress("drill", 10, unit="faults") as bar:   # or progress.for_command(...)
        bar.note("starting 3 replicas")                     # stays, printed above the bar
        bar.begin("fault 1: pause")
        bar.advance()

Nothing here raises on purpose.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.file_proxy import FileProxy
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from gcs_ha.eta import Clock, Eta, clock_text


class _EtaColumn(ProgressColumn):
    def __init__(self, eta: Eta) -> None:
        super().__init__()
        self._eta = eta

    def render(self, task: Task) -> Text:
        return Text(f"ETA {clock_text(self._eta.remaining_s())}", style="progress.remaining")


class _TwoLines(Progress):
    """The bar, and under it what runs now (cut short with … on a narrow terminal)."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text("  " + str(task.fields.get("now", "")), no_wrap=True, overflow="ellipsis")


class WorkProgress:
    """Steps shown as a progress bar with an ETA on `file` (stderr) while in a `with`
    block, when `enabled`; `force` draws it even when `file` is not a terminal
    (--progress given). Off, only notes are printed, as plain lines."""

    def __init__(
        self,
        title: str,
        total: float,
        *,
        unit: str = "",
        planned_s: float | None = None,
        enabled: bool = True,
        force: bool = False,
        file: TextIO | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.eta = Eta(max(total, 1e-9), planned_s, clock)
        self._file = file
        self._rich: Progress | None = None
        self._task = TaskID(0)
        self._moved: list[tuple[logging.StreamHandler[Any], TextIO]] = []
        if enabled:
            self._rich = self._make(title, unit, force, clock)

    def _make(self, title: str, unit: str, force: bool, clock: Clock) -> Progress:
        console = Console(file=self._file or sys.stderr, force_terminal=force or None)
        done = "{task.completed:.0f}/{task.total:.0f}" + (f" {unit}" if unit else "")
        rich = _TwoLines(
            SpinnerColumn(),
            TextColumn(title, markup=False),
            BarColumn(bar_width=24),
            TextColumn(done, markup=False),
            TimeElapsedColumn(),
            _EtaColumn(self.eta),
            console=console,
            transient=True,
            refresh_per_second=4,
            redirect_stdout=False,  # stdout may be a pipe for the table or the JSON
            get_time=clock,
        )
        self._task = rich.add_task(title, total=self.eta.total, now="")
        return rich

    def __enter__(self) -> WorkProgress:
        if self._rich is not None:
            original = sys.stderr
            self._rich.start()
            if isinstance(sys.stderr, FileProxy):  # rich redirects stderr on a terminal
                self._moved = [
                    (h, original)
                    for h in logging.getLogger().handlers
                    if isinstance(h, logging.StreamHandler) and h.stream is original
                ]
                for handler, _ in self._moved:
                    handler.setStream(sys.stderr)  # log records printed above the bar
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handler, original in self._moved:
            handler.setStream(original)
        self._moved = []
        if self._rich is not None:
            self._rich.stop()

    def begin(self, what: str) -> None:
        if self._rich is not None:
            self._rich.update(self._task, now=what)

    def advance(self, units: float = 1.0) -> None:
        self.eta.advance(units)
        if self._rich is not None:
            self._rich.update(self._task, completed=self.eta.done)

    def restart_clock(self) -> None:
        self.eta.restart()
        if self._rich is not None:
            self._rich.update(self._task, completed=0.0)

    def note(self, line: str) -> None:
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self._file or sys.stderr, flush=True)

    def status_text(self) -> str:
        """The bar's lines as plain text, as wide as the terminal (tests); "" when off."""
        if self._rich is None:
            return ""
        out = io.StringIO()
        console = Console(file=out, width=self._rich.console.width, color_system=None)
        console.print(self._rich.get_renderable())
        return out.getvalue().rstrip()
