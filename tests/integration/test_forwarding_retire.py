"""A forwarded call still in flight when its leader channel is retired ends UNAVAILABLE.

grpc.aio raises asyncio.CancelledError (not an AioRpcError) in calls still running when
their channel is closed. Before the fix that error escaped the routing and the caller's
call ended with no status at all: a Ray CreateActor (no deadline) waited forever.
A real grpc.aio "leader" on 127.0.0.9 whose handler never answers, gcs-ha's Forwarder.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from gcs_ha.server import forwarding
from gcs_ha.server.forwarding import CHANNEL_CLOSED, Forwarder, LeaderChannel


class CallerContext:
    """What the Forwarder reads from the caller's call."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float | None:
        return None


async def forward_then_retire() -> tuple[Any, bool]:
    async def never(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(60)
        return b""

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(never)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", {"M": handler}),))
    port = server.add_insecure_port("127.0.0.9:0")
    await server.start()
    channels = LeaderChannel()
    forwarder = Forwarder("r0", channels)
    try:
        channel = channels.get(f"127.0.0.9:{port}")
        call = asyncio.create_task(
            forwarder.try_unary(channel, "/t.S/M", b"", CallerContext())  # type: ignore[arg-type]
        )
        await asyncio.sleep(0.3)
        channels.get("127.0.0.9:1")  # the leader moved: the old channel is retired
        try:
            await asyncio.wait_for(call, 10)
        except grpc.aio.AioRpcError as error:
            return error, forwarder.unavailable(channel, error)
        return "replied", False
    finally:
        await channels.close()
        await server.stop(0)


def test_a_call_cut_by_retiring_its_channel_counts_as_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forwarding, "RETIRE_GRACE_S", 0.2)
    error, unavailable = asyncio.run(forward_then_retire())
    assert isinstance(error, grpc.aio.AioRpcError)
    assert (error.code(), error.details()) == (grpc.StatusCode.CANCELLED, CHANNEL_CLOSED)
    assert unavailable  # so the routing answers UNAVAILABLE, which Ray's clients retry
