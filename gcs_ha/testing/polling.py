"""Waiting for a condition: the one polling helper of tests, harnesses and drills.

`until` (async, on the running loop) and `wait_until` (blocking) poll a probe until it
holds. They differ only in how they wait and fail: `until` raises AssertionError (a
test's condition not reached), `wait_until` raises UnavailableError (gcs_ha.errors: a
cluster, process or service not there in time; drills report it) and returns the
probe's value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from gcs_ha.errors import UnavailableError

T = TypeVar("T")
WAIT_S = 15.0  # the default bound of `until`
PAUSE_S = 0.01  # between two probes of `until`


async def until(
    condition: Callable[[], object],
    what: str = "condition",
    timeout: float = WAIT_S,
    pause: float = PAUSE_S,
) -> None:
    """Probe `condition` every `pause` seconds until it is true; AssertionError naming
    `what` once `timeout` seconds (loop time) have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        await asyncio.sleep(pause)


def wait_until(probe: Callable[[], T | None], timeout: float, what: str, pause: float = 0.1) -> T:
    """Call `probe` every `pause` seconds until it returns something other than None,
    and return that; UnavailableError "`what` after `timeout` s" once the time is up."""
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= end:
            raise UnavailableError(f"{what} after {timeout:.0f} s")
        time.sleep(pause)
