"""The replica front end's event loop and interpreter settings.

uvloop by default (`GCS_HA_EVENT_LOOP=asyncio` selects the standard one), raised
collector thresholds GC_THRESHOLDS (`GCS_HA_GC_THRESHOLDS=a,b,c` sets others),
`gc.freeze()` once started, and `GcPauseLog`, which logs a collection of GC_PAUSE_WARN_S
or more. Why, with measurements: DESIGN.md, "The interpreter serves throughput, not Raft".

Errors: ConfigError for a malformed GCS_HA_EVENT_LOOP or GCS_HA_GC_THRESHOLDS.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from gcs_ha.errors import ConfigError

log = logging.getLogger(__name__)

EVENT_LOOP_ENV = "GCS_HA_EVENT_LOOP"
GC_THRESHOLDS_ENV = "GCS_HA_GC_THRESHOLDS"
EVENT_LOOPS = ("uvloop", "asyncio")
GC_THRESHOLDS = (50_000, 50, 100)
GC_PAUSE_WARN_S = 0.2

T = TypeVar("T")


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
                "garbage collection of generation %s took %.0f ms (every call of this "
                "process waited); %s objects collected",
                info.get("generation"),
                took * 1000,
                info.get("collected"),
            )


def event_loop_name(environ: Mapping[str, str] | None = None) -> str:
    """The event loop GCS_HA_EVENT_LOOP asks for (default uvloop); ConfigError if unknown."""
    name = (os.environ if environ is None else environ).get(EVENT_LOOP_ENV) or "uvloop"
    if name not in EVENT_LOOPS:
        raise ConfigError(f"{EVENT_LOOP_ENV}={name!r}: use one of {', '.join(EVENT_LOOPS)}")
    return name


def gc_thresholds(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """The collector thresholds to use: GCS_HA_GC_THRESHOLDS, else GC_THRESHOLDS."""
    text = (os.environ if environ is None else environ).get(GC_THRESHOLDS_ENV, "").strip()
    if not text:
        return GC_THRESHOLDS
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise ConfigError(f"{GC_THRESHOLDS_ENV}={text!r}: give three integers >= 0, e.g. 700,10,10")
    return values[0], values[1], values[2]


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """A factory for the named event loop (None: asyncio's default)."""
    if name == "uvloop":
        import uvloop  # noqa: PLC0415  (only the replica process needs it)

        return uvloop.new_event_loop
    return None


def run_front_end(main: Coroutine[Any, Any, T]) -> T:
    """Run the replica process's main coroutine with the settings above."""
    name = event_loop_name()
    gc.set_threshold(*gc_thresholds())
    gc.freeze()
    if not any(isinstance(cb, GcPauseLog) for cb in gc.callbacks):
        gc.callbacks.append(GcPauseLog())
    log.debug("event loop %s, GC thresholds %s", name, gc.get_threshold())
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
