"""gcs_ha.server.interpreter: the replica process's GIL and garbage-collector settings."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Iterator

import pytest

from gcs_ha.server import interpreter
from gcs_ha.server.interpreter import GC_THRESHOLDS, SWITCH_INTERVAL_S, GcPauseLog


@pytest.fixture
def restored() -> Iterator[None]:
    """The interpreter's settings as they were before the test."""
    switch, thresholds, callbacks = sys.getswitchinterval(), gc.get_threshold(), gc.callbacks[:]
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks
        gc.unfreeze()


def test_tune_interpreter_sets_switch_interval_thresholds_and_pause_log(restored: None) -> None:
    interpreter.tune_interpreter()
    interpreter.tune_interpreter()  # twice: still one pause log
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert sum(isinstance(cb, GcPauseLog) for cb in gc.callbacks) == 1


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
        "garbage collection of generation 2 took 310 ms (every thread, Raft's too, was "
        "stopped); 7 objects collected"
    ]


def test_pause_log_runs_as_a_real_gc_callback(
    restored: None, caplog: pytest.LogCaptureFixture
) -> None:
    gc.callbacks.append(GcPauseLog(warn_s=0.0))  # every collection counts as long
    with caplog.at_level(logging.WARNING, logger=interpreter.__name__):
        gc.collect()
    assert any("garbage collection of generation 2" in r.getMessage() for r in caplog.records)
