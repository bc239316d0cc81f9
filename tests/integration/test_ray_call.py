"""ray_call: a handler cut short by a cancelled dependency still answers its caller.

A real grpc.aio server on 127.0.0.9 (an ephemeral port) and a client with a deadline.
Without the fix grpc.aio sent no status at all, and the client waited for its deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.server import ray_call as rc

Work = Any  # what the handler awaits


async def serve_once(work: Work, client_timeout: float, cancel_after: float | None = None) -> Any:
    """One call of a servicer method whose handler awaits `work()`; the client's outcome
    (the reply, or the AioRpcError) and whether the handler ran to its end."""

    async def method(request: bytes, context: rc.Context) -> bytes:
        async def handle(reply: pb.InternalKVGetReply) -> None:
            reply.value = await work()

        reply = await rc.ray_call(context, pb.InternalKVGetReply(), handle)
        return reply.SerializeToString()

    handler = grpc.unary_unary_rpc_method_handler(method)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {"M": handler}),))
    port = server.add_insecure_port("127.0.0.9:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.9:{port}") as channel:
            call = channel.unary_unary("/t.S/M")(b"", timeout=client_timeout)
            if cancel_after is not None:
                await asyncio.sleep(cancel_after)
                call.cancel()
            try:
                return pb.InternalKVGetReply.FromString(await call)
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
                return error
    finally:
        await server.stop(0)


def cancelled_soon() -> Work:
    async def work() -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, future.cancel)
        return await future

    return work


def test_a_handler_whose_awaited_work_was_cancelled_answers_unavailable() -> None:
    outcome = asyncio.run(serve_once(cancelled_soon(), client_timeout=10))
    assert isinstance(outcome, grpc.aio.AioRpcError)
    assert outcome.code() is grpc.StatusCode.UNAVAILABLE  # not DEADLINE_EXCEEDED
    assert outcome.details() == rc.CUT_SHORT


def test_a_normal_reply_is_unchanged() -> None:
    async def work() -> bytes:
        return b"v"

    outcome = asyncio.run(serve_once(work, client_timeout=10))
    assert outcome == pb.InternalKVGetReply(value=b"v", status={})


def test_a_call_the_client_cancelled_stays_cancelled() -> None:
    async def work() -> bytes:
        await asyncio.sleep(30)
        return b"never"

    outcome = asyncio.run(serve_once(work, client_timeout=10, cancel_after=0.2))
    assert isinstance(outcome, asyncio.CancelledError) or (
        isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() is grpc.StatusCode.CANCELLED
    )


@pytest.mark.parametrize("cancelling", [0, 1])
def test_only_a_cancellation_of_the_call_itself_propagates(cancelling: int) -> None:
    """The decision in isolation: a task being cancelled re-raises, others abort."""

    class Context:
        aborted: tuple[Any, ...] = ()

        async def abort(self, code: Any, details: str, trailing: Any = ()) -> None:
            self.aborted = (code, details)
            raise RuntimeError("aborted")

    async def main() -> tuple[str, tuple[Any, ...]]:
        context = Context()

        async def handle(reply: pb.InternalKVGetReply) -> None:
            if cancelling:
                asyncio.current_task().cancel()  # type: ignore[union-attr]
                await asyncio.sleep(0)
            raise asyncio.CancelledError

        try:
            await rc.ray_call(context, pb.InternalKVGetReply(), handle)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            return "cancelled", context.aborted
        except RuntimeError:
            return "aborted", context.aborted
        return "replied", context.aborted

    kind, aborted = asyncio.run(main())
    if cancelling:
        assert (kind, aborted) == ("cancelled", ())
    else:
        assert (kind, aborted) == ("aborted", (grpc.StatusCode.UNAVAILABLE, rc.CUT_SHORT))
