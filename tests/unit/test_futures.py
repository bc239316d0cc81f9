"""gcs_ha.futures: settling futures whose waiters may be gone."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gcs_ha.futures import cancel_and_wait, settle, settle_all


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


def test_cancel_and_wait_ends_a_loop_whose_wait_for_swallowed_the_cancellation() -> None:
    """The membership registration loop's shape: wait_for on a Raft call, then sleep. A
    cancel that arrives with the call's result is lost on Python 3.11; stopping must not
    hang on it (a teardown hung for 300 s in CI this way)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        calls: list[asyncio.Future[int]] = []

        async def register_loop() -> None:
            while True:
                calls.append(loop.create_future())
                await asyncio.wait_for(calls[-1], 5.0)
                await asyncio.sleep(0.05)

        task = loop.create_task(register_loop())
        while not calls:
            await asyncio.sleep(0)
        calls[-1].set_result(1)  # the result and the cancel in one loop iteration
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
        if sys.version_info < (3, 12):
            assert not task.done()  # the cancellation was swallowed
        assert await asyncio.wait_for(cancel_and_wait(task, every=0.1), 2.0) is None
        assert task.cancelled()

        async def failing() -> None:
            raise ValueError("broken")

        broken = loop.create_task(failing())
        await asyncio.sleep(0)
        assert isinstance(await cancel_and_wait(broken), ValueError)

    asyncio.run(main())
