"""Settling asyncio futures whose waiter may have given up meanwhile (a done future,
cancelled by its caller, is left as it is)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def settle(future: asyncio.Future[T], result: T, error: BaseException | None = None) -> None:
    """Give `future` `error` if there is one, else `result`, unless it is done already."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def settle_all(
    futures: Iterable[asyncio.Future[None]], error: BaseException | None = None
) -> None:
    """`settle` each of `futures` with `error`, or with None."""
    for future in futures:
        settle(future, None, error)


async def cancel_and_wait(task: asyncio.Future[Any], every: float = 0.5) -> BaseException | None:
    """Cancel `task` and wait until it has ended, cancelling it again every `every` s.

    Once is not always enough on Python 3.11: `asyncio.wait_for` returns its inner future's
    result instead of raising CancelledError when the cancellation arrives in the same loop
    iteration as that result (fixed in 3.12), so a task looping over `wait_for` runs on to
    its next await. Returns the exception the task ended with, if not a cancellation."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    return None if task.cancelled() else task.exception()
