"""Requests that do not parse get INVALID_ARGUMENT, on every service.

grpc.aio parses a request with the handler's deserializer before the handler runs; a
DecodeError there ends the call as UNKNOWN "Unexpected DecodeError", which reads like a
server bug. `ParseGuardInterceptor` (innermost) hands grpc a copy of each handler that
takes the raw bytes and parses them itself, answering INVALID_ARGUMENT "unable to parse
the request as <message type>" when they do not parse (Ray's GCS answers INTERNAL "Unable to parse
request"; INTERNAL means a storage failure here). Streams are parsed message by message.
The wrapped handlers are made once per method.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gcs_ha.server.forwarding import Context, Handler, Interceptor

UNPARSABLE = "unable to parse the request"
Parse = Callable[[bytes], Any]


class ParseGuardInterceptor(Interceptor):
    """See the module doc."""

    def __init__(self) -> None:
        self._guarded: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            guarded = self._guarded[method] = _guard(handler)
        return guarded


def _guard(handler: Any) -> Handler:
    parse = _parser(handler.request_deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, parse), None, serialize
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _unary(handler.unary_stream, parse), None, serialize
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _streaming(handler.stream_unary, parse), None, serialize
        )
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, parse), None, serialize
    )


def _unary(behavior: Any, parse: Parse) -> Any:
    """`behavior` taking one raw request. A streaming behavior either yields its replies
    (an async generator) or writes them with context.write (a coroutine): kept as it is."""
    if inspect.isasyncgenfunction(behavior):

        async def replies(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async for reply in behavior(await _parse(parse, raw, context), context):
                yield reply

        return replies

    async def answer(raw: bytes, context: Context) -> Any:
        return await behavior(await _parse(parse, raw, context), context)

    return answer


def _streaming(behavior: Any, parse: Parse) -> Any:
    """`behavior` taking a stream of raw requests (see `_unary` for its replies)."""
    if inspect.isasyncgenfunction(behavior):

        async def replies(raws: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
            async for reply in behavior(_parsed(parse, raws, context), context):
                yield reply

        return replies

    async def answer(raws: AsyncIterator[bytes], context: Context) -> Any:
        return await behavior(_parsed(parse, raws, context), context)

    return answer


def _parser(deserialize: Parse) -> Parse:
    """`deserialize`, raising DecodeError with the message type's name."""
    descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "the request message")

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError:
            raise DecodeError(f"{UNPARSABLE} as {name}") from None

    return parse


async def _parse(parse: Parse, raw: bytes, context: Context) -> Any:
    try:
        return parse(raw)
    except DecodeError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("context.abort returned") from None  # pragma: no cover


async def _parsed(parse: Parse, raws: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
    async for raw in raws:
        yield await _parse(parse, raw, context)
