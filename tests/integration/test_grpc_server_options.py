"""The replica's gRPC server options: a burst of calls far beyond gRPC's default
pending-request limits is queued, not CANCELLED (Ray's clients never retry CANCELLED)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio

from gcs_ha.server.replica_main import GRPC_SERVER_OPTIONS

BURST = 5_000  # above the default hard limit (3,000)
ADDRESS = "127.0.0.1:28990"


async def slow_echo(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0.001)
    return request


class Handlers(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        return grpc.unary_unary_rpc_method_handler(slow_echo)


async def burst(options: list[tuple[str, Any]]) -> int:
    """How many of BURST concurrent calls were CANCELLED by the server."""
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers([Handlers()])
    server.add_insecure_port(ADDRESS)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(ADDRESS) as channel:
            call = channel.unary_unary("/t/Echo")
            results = await asyncio.gather(
                *(call(b"x", timeout=120) for _ in range(BURST)), return_exceptions=True
            )
    finally:
        await server.stop(None)
    return sum(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.CANCELLED
        for r in results
    )


def test_a_burst_beyond_grpcs_default_limits_is_not_cancelled() -> None:
    assert asyncio.run(burst(GRPC_SERVER_OPTIONS)) == 0


def test_without_the_options_grpc_cancels_part_of_the_burst() -> None:
    """The teeth: gRPC's defaults do cancel such a burst (if a gRPC upgrade changes
    that, the options above may be dropped)."""
    assert asyncio.run(burst([])) > 0
