"""gcs_ha.server.interpreter: the replica front end's event loop and interpreter settings."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Iterator

import pytest

from gcs_ha.errors import ConfigError
from gcs_ha.server import interpreter
from gcs_ha.server.interpreter import GcPauseLog


@pytest.fixture
def restored() -> Iterator[None]:
    """The interpreter's settings as they were before the test."""
    thresholds, callbacks = gc.get_threshold(), gc.callbacks[:]
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks
        gc.unfreeze()


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize(
    ("setting", "module"), [("", "uvloop"), ("asyncio", "asyncio.unix_events")]
)
def test_run_front_end_picks_the_event_loop_and_leaves_the_interpreter_alone(
    restored: None, monkeypatch: pytest.MonkeyPatch, setting: str, module: str
) -> None:
    monkeypatch.setenv(interpreter.EVENT_LOOP_ENV, setting)
    monkeypatch.delenv(interpreter.GC_THRESHOLDS_ENV, raising=False)
    switch = sys.getswitchinterval()
    assert interpreter.run_front_end(_loop_type()) == module
    assert interpreter.run_front_end(_loop_type()) == module  # twice: still one pause log
    assert sys.getswitchinterval() == switch  # no GIL tuning: Raft is not in this process
    assert gc.get_threshold() == interpreter.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert sum(isinstance(cb, GcPauseLog) for cb in gc.callbacks) == 1


def test_gc_thresholds_can_be_set_for_experiments(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(interpreter.GC_THRESHOLDS_ENV, "700,10,10")
    interpreter.run_front_end(_loop_type())
    assert gc.get_threshold() == (700, 10, 10)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=interpreter.EVENT_LOOP_ENV):
        interpreter.event_loop_name({interpreter.EVENT_LOOP_ENV: "trio"})
    for bad in ("1,2", "a,b,c", "1,2,-3"):
        with pytest.raises(ConfigError, match=interpreter.GC_THRESHOLDS_ENV):
            interpreter.gc_thresholds({interpreter.GC_THRESHOLDS_ENV: bad})
    assert interpreter.gc_thresholds({}) == interpreter.GC_THRESHOLDS


def test_pause_log_warns_only_about_long_collections(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = GcPauseLog(warn_s=0.2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=interpreter.__name__):
        log("start", {"generation": 0})
        now[0] += 0.05
        log("stop", {"generation": 0, "collected": 3})
        log("start", {"generation": 2})
        now[0] += 0.31
        log("stop", {"generation": 2, "collected": 7})
        log("stop", {"generation": 2, "collected": 0})  # no start seen: ignored
    assert [r.getMessage() for r in caplog.records] == [
        "garbage collection of generation 2 took 310 ms (every call of this process "
        "waited); 7 objects collected"
    ]


def test_pause_log_runs_as_a_real_gc_callback(
    restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    gc.callbacks.append(GcPauseLog(warn_s=0.0))  # every collection counts as long
    with caplog.at_level(logging.WARNING, logger=interpreter.__name__):
        gc.collect()
    assert any("garbage collection of generation 2" in r.getMessage() for r in caplog.records)
