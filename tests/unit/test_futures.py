"""gcs_ha.futures: settling futures whose waiters may be gone."""

from __future__ import annotations

import asyncio

import pytest

from gcs_ha.futures import settle, settle_all


def test_settle_gives_a_result_or_an_error_and_leaves_done_futures_alone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ok, failed, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
        cancelled.cancel()
        settle(ok, 7)
        settle(failed, 7, ValueError("no"))
        settle(cancelled, 7, ValueError("no"))  # no InvalidStateError
        assert ok.result() == 7
        with pytest.raises(ValueError, match="no"):
            failed.result()
        assert cancelled.cancelled()
        settle(ok, 8)
        assert ok.result() == 7  # the first outcome stays

        batch = [loop.create_future() for _ in range(3)]
        settle_all(batch)
        assert [f.result() for f in batch] == [None, None, None]
        batch = [loop.create_future() for _ in range(2)]
        settle_all(batch, KeyError("k"))
        assert all(isinstance(f.exception(), KeyError) for f in batch)

    asyncio.run(main())
