"""gcs_ha.progress: the ETA on a fake clock, the bar, and when it is (not) drawn."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator

import pytest

from gcs_ha.eta import Eta, clock_text
from gcs_ha.progress import QUIET, for_command, want_progress
from gcs_ha.progress_bar import WorkProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_eta_before_the_first_unit_is_the_plan_or_unknown(clock: FakeClock) -> None:
    assert Eta(4, clock=clock).remaining_s() is None
    planned = Eta(4, planned_s=60.0, clock=clock)
    clock.now += 15
    assert planned.remaining_s() == 45.0
    clock.now += 100
    assert planned.remaining_s() == 0.0


def test_eta_follows_the_average_unit_and_counts_down(clock: FakeClock) -> None:
    eta = Eta(4, planned_s=1.0, clock=clock)
    clock.now += 10
    eta.advance(1)  # 10 s per unit, 3 left
    assert eta.remaining_s() == 30.0
    clock.now += 4
    assert eta.remaining_s() == 26.0
    clock.now += 16  # the unit under way is late: at least the two after it remain
    assert eta.remaining_s() == 20.0
    eta.advance(1)  # 2 units in 30 s
    assert eta.remaining_s() == 30.0
    eta.advance(5)  # never past the total
    assert eta.done == 4 and eta.remaining_s() == 0.0


def test_eta_in_seconds_of_a_duration(clock: FakeClock) -> None:
    eta = Eta(60.0, planned_s=60.0, clock=clock)
    clock.now += 12.5
    eta.advance(12.5)
    assert eta.remaining_s() == pytest.approx(47.5)


def test_clock_text() -> None:
    assert clock_text(None) == "?"
    assert clock_text(0.0) == "0:00:00"
    assert clock_text(59.2) == "0:01:00"
    assert clock_text(3725) == "1:02:05"


def test_the_bar_shows_counts_eta_and_what_runs(clock: FakeClock) -> None:
    bar = WorkProgress("bench kv", 4, unit="points", planned_s=40, file=io.StringIO(), clock=clock)
    clock.now += 5
    assert "0/4 points 0:00:05 ETA 0:00:35" in bar.status_text()
    bar.begin("ray-redis: put, 16 clients")
    clock.now += 5
    bar.advance()
    first, second = bar.status_text().splitlines()
    assert "1/4 points 0:00:10 ETA 0:00:30" in first
    assert second.strip() == "ray-redis: put, 16 clients"
    clock.now += 20
    bar.advance(3)
    assert "4/4 points 0:00:30 ETA 0:00:00" in bar.status_text()


def test_off_only_notes_are_printed_as_plain_lines(clock: FakeClock) -> None:
    out = io.StringIO()
    with WorkProgress("drill", 3, unit="faults", enabled=False, file=out, clock=clock) as bar:
        bar.begin("fault 1: pause")
        bar.advance()
        bar.note("fault 1: pause r2; whole again after 1.2 s")
    assert out.getvalue() == "fault 1: pause r2; whole again after 1.2 s\n"
    assert bar.status_text() == ""
    assert bar.eta.done == 1  # the estimate is kept either way


@pytest.fixture
def stderr_handler() -> Iterator[logging.StreamHandler[io.StringIO]]:
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler  # type: ignore[misc]
    finally:
        root.removeHandler(handler)


def test_forced_on_a_pipe_it_draws_and_logs_above_the_bar(
    clock: FakeClock, stderr_handler: logging.StreamHandler[io.StringIO]
) -> None:
    out = io.StringIO()
    before = stderr_handler.stream
    with WorkProgress("drill", 2, unit="faults", force=True, file=out, clock=clock) as bar:
        bar.note("starting 3 replicas")
        logging.getLogger("gcs_ha.test").warning("a log record")
        assert stderr_handler.stream is not before  # through the bar's console
        bar.advance()
    assert stderr_handler.stream is before  # given back
    text = out.getvalue()
    assert "\x1b[" in text  # drawn: a terminal was forced
    assert "starting 3 replicas" in text and "a log record" in text


def test_drawn_only_on_a_terminal_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as pipe:
        assert not want_progress(None, pipe)
        assert want_progress(True, pipe)
    master, slave = os.openpty()
    with os.fdopen(master) as _, os.fdopen(slave, "w") as tty:
        assert want_progress(None, tty)
        assert not want_progress(False, tty)
        monkeypatch.setenv("TERM", "dumb")
        assert not want_progress(None, tty)


def test_verbose_commands_log_instead_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    master, slave = os.openpty()
    with os.fdopen(master) as _, os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        assert for_command(None, "bench kv", 3).status_text() != ""
        assert for_command(None, "bench kv", 3, verbose=True).status_text() == ""
        assert for_command(True, "bench kv", 3, verbose=True).status_text() != ""
        assert for_command(False, "bench kv", 3).status_text() == ""


def test_quiet_steps_log_their_notes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gcs_ha.progress"):
        QUIET.begin("x")
        QUIET.advance(2)
        QUIET.note("load stopped: 10 operations; checking")
    assert caplog.messages == ["load stopped: 10 operations; checking"]


def test_setting_up_is_left_out_after_restart_clock(clock: FakeClock) -> None:
    bar = WorkProgress("drill", 60.0, unit="s", planned_s=60.0, file=io.StringIO(), clock=clock)
    clock.now += 30  # the cluster starts, the load warms up
    bar.restart_clock()
    clock.now += 15
    bar.advance(15.0)
    assert bar.eta.remaining_s() == 45.0  # not 45 * (45 / 15)
    assert "15/60 s" in bar.status_text()
