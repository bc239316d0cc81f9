"""Settling asyncio futures whose waiter may have given up meanwhile (a done future,
cancelled by its caller, is left as it is)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TypeVar

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
