"""gcs_ha.server.status: every error maps to its gRPC status and back, over a real channel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from gcs_ha.errors import (
    ConfigError,
    CorruptDataError,
    DataDirError,
    GcsHaError,
    InvalidRequestError,
    NotLeaderError,
    StorageError,
    UnavailableError,
    UnknownOutcomeError,
)
from gcs_ha.server.status import abort_with_error, error_from_rpc, grpc_status_for

CASES: list[tuple[GcsHaError, grpc.StatusCode, type[GcsHaError]]] = [
    (
        NotLeaderError("not the leader", "10.0.0.1:6379"),
        grpc.StatusCode.FAILED_PRECONDITION,
        NotLeaderError,
    ),
    (UnavailableError("no quorum"), grpc.StatusCode.UNAVAILABLE, UnavailableError),
    (UnknownOutcomeError("leader lost"), grpc.StatusCode.UNAVAILABLE, UnavailableError),
    (InvalidRequestError("unknown table"), grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
    (ConfigError("bad member"), grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
    (StorageError("disk"), grpc.StatusCode.INTERNAL, StorageError),
    (CorruptDataError("crc"), grpc.StatusCode.INTERNAL, StorageError),
    (DataDirError("locked"), grpc.StatusCode.INTERNAL, StorageError),
    (GcsHaError("other"), grpc.StatusCode.UNKNOWN, GcsHaError),
]


@pytest.mark.parametrize(("error", "code", "_back"), CASES)
def test_table(error: GcsHaError, code: grpc.StatusCode, _back: type[GcsHaError]) -> None:
    got, message = grpc_status_for(error)
    assert got == code
    assert str(error) in message


def test_leader_hint_is_in_the_message() -> None:
    _, message = grpc_status_for(NotLeaderError("not the leader", "10.0.0.1:6379"))
    assert message == "not the leader; leader at 10.0.0.1:6379"
    _, message = grpc_status_for(NotLeaderError("not the leader"))
    assert message == "not the leader"


class _Raiser(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A server whose method /t/<i> aborts with CASES[i]'s error."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        index = int(details.method.rsplit("/", 1)[1])

        async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            await abort_with_error(context, CASES[index][0])

        return grpc.unary_unary_rpc_method_handler(handler)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A grpc.aio server on a free loopback port, run by its own loop in its own thread."""
    started: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, int]] = []
    ready = threading.Event()

    async def serve() -> None:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        server.add_generic_rpc_handlers((_Raiser(),))
        await server.start()
        stop = asyncio.Event()
        started.append((asyncio.get_running_loop(), stop, port))
        ready.set()
        await stop.wait()
        await server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    loop, stop, port = started[0]
    yield f"127.0.0.1:{port}"
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def _call(address: str, method: str) -> grpc.RpcError:
    """Call `method` with an empty request; returns the error it fails with."""
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method, None, None)
        with pytest.raises(grpc.RpcError) as raised:
            call(b"", timeout=10)
    return raised.value


@pytest.mark.parametrize("index", range(len(CASES)))
def test_round_trip(address: str, index: int) -> None:
    error, code, back = CASES[index]
    failure = _call(address, f"/t/{index}")
    assert failure.code() == code
    mapped = error_from_rpc(failure, address)
    assert type(mapped) is back
    assert str(error) in str(mapped)
    if isinstance(error, NotLeaderError):
        assert isinstance(mapped, NotLeaderError)
        assert mapped.leader_hint == "10.0.0.1:6379"


def test_unreachable_address_is_unavailable() -> None:
    mapped = error_from_rpc(_call("127.0.0.1:1", "/t/0"), "127.0.0.1:1")
    assert isinstance(mapped, UnavailableError)
    assert str(mapped).startswith("cannot reach 127.0.0.1:1")
