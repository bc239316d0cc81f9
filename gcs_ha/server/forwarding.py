"""Every replica's GCS port answers Ray's calls: locally on the serving leader, forwarded
to the leader everywhere else.

`ForwardingInterceptor` sits in front of the typed servicers; on a replica that does not
serve, `Forwarder` routes a call of Ray's GCS services (`RAY_GCS_SERVICES`) as raw bytes:
to the leader (`LeaderView`), held (at most `hold_s`, never past its deadline) while none
can be reached, or replayed once when the leader was lost with it (replays.py). The
routing table and its reasons: DESIGN.md, "Routing Ray's calls". Admin, health and other
services pass through. Errors: a call that cannot be routed gets gRPC UNAVAILABLE (never
CANCELLED); our own refusals carry the NOT_APPLIED trailing metadata (status.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc
import grpc.aio
from google.protobuf import descriptor_pool

# Imported for their descriptors: method kinds are read from the default pool.
from gcs_ha.proto.ray import autoscaler_pb2, gcs_service_pb2, ray_syncer_pb2  # noqa: F401
from gcs_ha.ray_tls import RayTls, aio_channel
from gcs_ha.server.replays import REPLAYABLE_METHODS
from gcs_ha.server.status import NOT_APPLIED, cancelled_itself, not_applied
from gcs_ha.storage.large_values import MAX_KV_VALUE_BYTES

log = logging.getLogger(__name__)

# Ray's GCS services (ray-gcs-contract.md section 1): the calls that are forwarded.
RAY_GCS_SERVICES: frozenset[str] = frozenset(
    {
        "ray.rpc.NodeInfoGcsService",
        "ray.rpc.NodeResourceInfoGcsService",
        "ray.rpc.JobInfoGcsService",
        "ray.rpc.ActorInfoGcsService",
        "ray.rpc.PlacementGroupInfoGcsService",
        "ray.rpc.InternalKVGcsService",
        "ray.rpc.ControlPlanePubSubGcsService",
        "ray.rpc.ObservabilityPubSubService",
        "ray.rpc.RuntimeEnvGcsService",
        "ray.rpc.WorkerInfoGcsService",
        "ray.rpc.TaskInfoGcsService",
        "ray.rpc.RayEventExportGcsService",
        "ray.rpc.autoscaler.AutoscalerStateService",
        "ray.rpc.syncer.RaySyncer",
    }
)
FORWARDED_BY_KEY = "gcs-ha-forwarded-by"
HOLD_S = 3.0  # longest a unary call waits for a leader (well above one failover)
DEADLINE_MARGIN_S = 0.05  # a held call gives up this long before its deadline
RETIRE_GRACE_S = 2.0  # calls in flight to a former leader get this long to finish
LOST_WAIT_S = 1.0  # a call lost with a leader waits this long for another before its replay
# Ray's internal KV takes values up to Ray's own gRPC message limit (512 MiB); a message a
# little larger is still read, so an oversized value gets Ray's InvalidArgument status
# naming the limit rather than gRPC's RESOURCE_EXHAUSTED. The replica's server and its
# forwarding channels take the same.
MAX_MESSAGE_BYTES = MAX_KV_VALUE_BYTES + 16 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Metadata a forwarder must not copy: set by gRPC itself on the outbound call.
_NOT_COPIED = ("user-agent",)

Metadata = tuple[tuple[str, str | bytes], ...]
if TYPE_CHECKING:  # the stubs' generics do not exist at run time
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor
Context = grpc.aio.ServicerContext[Any, Any]


class Kind(Enum):
    """The cardinality of a method: (client streams, server streams)."""

    UNARY_UNARY = (False, False)
    UNARY_STREAM = (False, True)
    STREAM_UNARY = (True, False)
    STREAM_STREAM = (True, True)


def service_of(method: str) -> str:
    """The service of a method path: "/pkg.Service/Method" -> "pkg.Service"."""
    return method.lstrip("/").partition("/")[0]


def is_ray_gcs_method(method: str) -> bool:
    """Whether `method` belongs to one of Ray's GCS services."""
    return service_of(method) in RAY_GCS_SERVICES


@functools.lru_cache(maxsize=512)
def method_kind(method: str) -> Kind | None:
    """The kind of `method` from the generated descriptors; None for a method we have no
    descriptor for (no replica serves it: it is answered UNIMPLEMENTED where it arrives)."""
    full_name = method.lstrip("/").replace("/", ".")
    try:
        desc = descriptor_pool.Default().FindMethodByName(full_name)
    except KeyError:
        return None
    return Kind((desc.client_streaming, desc.server_streaming))


def rejecting_handler(kind: Kind, code: grpc.StatusCode, message: str) -> Handler:
    """A handler of `kind` that ends every call with `code` and `message`."""

    trailing = NOT_APPLIED if code is grpc.StatusCode.UNAVAILABLE else ()

    async def reject(_request: Any, context: Context) -> None:
        await context.abort(code, message, trailing)

    if kind is Kind.UNARY_UNARY:
        return grpc.unary_unary_rpc_method_handler(reject)
    if kind is Kind.UNARY_STREAM:
        return grpc.unary_stream_rpc_method_handler(reject)
    if kind is Kind.STREAM_UNARY:
        return grpc.stream_unary_rpc_method_handler(reject)
    return grpc.stream_stream_rpc_method_handler(reject)


class LeaderChannel:
    """The cached channel to the current leader's GCS address; replaced when it changes."""

    def __init__(self, tls: RayTls | None = None) -> None:
        """`tls`: Ray's TLS settings (gcs_ha.ray_tls): the channel is TLS when given."""
        self._tls = tls
        self.address: str | None = None
        self._channel: grpc.aio.Channel | None = None
        self._retired: set[grpc.aio.Channel] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, address: str) -> grpc.aio.Channel:
        """The channel to `address` (a new one, retiring the old, if the leader moved)."""
        if address != self.address or self._channel is None:
            self.retire()
            self._channel = aio_channel(address, self._tls, CHANNEL_OPTIONS)
            self.address = address
        return self._channel

    def retire(self) -> None:
        """Drop the current channel; its calls in flight get RETIRE_GRACE_S to finish."""
        channel, self._channel, self.address = self._channel, None, None
        if channel is not None:
            self._retired.add(channel)
            task = asyncio.get_running_loop().create_task(self._close(channel))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def is_retired(self, channel: grpc.aio.Channel) -> bool:
        return channel in self._retired

    def reachable(self, address: str) -> bool:
        """False while the channel to `address` is failing to connect."""
        if address != self.address or self._channel is None:
            return True
        state = self._channel.get_state(try_to_connect=True)
        return state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE

    async def close(self) -> None:
        """Close every channel at once."""
        self.retire()
        for task in list(self._closing):
            task.cancel()
        for channel in list(self._retired):
            await channel.close(None)
        self._retired.clear()

    async def _close(self, channel: grpc.aio.Channel) -> None:
        try:
            await channel.close(RETIRE_GRACE_S)
        finally:
            self._retired.discard(channel)


class Forwarder:
    """Forwards calls to the leader as raw bytes, in all four kinds."""

    def __init__(self, node_id: str, channels: LeaderChannel) -> None:
        self._marker = (FORWARDED_BY_KEY, node_id)
        self.channels = channels
        # Calls forwarded, by method: each attempt (a replay counts again).
        self.forwarded: collections.Counter[str] = collections.Counter()

    def handler(self, kind: Kind, method: str, address: str) -> Handler:
        """A handler forwarding one call of `method` to `address`."""
        if kind is not Kind.UNARY_UNARY:  # a unary call is counted by try_unary
            self.forwarded[method] += 1
        if kind is Kind.UNARY_UNARY:
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(self.unary_unary, method, address)
            )
        if kind is Kind.UNARY_STREAM:
            return grpc.unary_stream_rpc_method_handler(
                functools.partial(self.unary_stream, method, address)
            )
        if kind is Kind.STREAM_UNARY:
            return grpc.stream_unary_rpc_method_handler(
                functools.partial(self.stream_unary, method, address)
            )
        return grpc.stream_stream_rpc_method_handler(
            functools.partial(self.stream_stream, method, address)
        )

    async def unary_unary(
        self, method: str, address: str, request: bytes, context: Context
    ) -> bytes:
        channel = self.channels.get(address)
        try:
            return await self.try_unary(channel, method, request, context)
        except grpc.aio.AioRpcError as error:
            await self.relay_error(channel, error, context)

    async def try_unary(
        self, channel: grpc.aio.Channel, method: str, request: bytes, context: Context
    ) -> bytes:
        """Forward one unary call; the leader's error is raised, not relayed."""
        self.forwarded[method] += 1
        call = channel.unary_unary(method, None, None)(request, **self._call_args(context))
        with _closed_channel_as_error():
            reply = cast(bytes, await call)
        await _relay_metadata(call, context)
        return reply

    async def stream_unary(
        self, method: str, address: str, requests: AsyncIterator[bytes], context: Context
    ) -> bytes:
        channel = self.channels.get(address)
        call = channel.stream_unary(method, None, None)(requests, **self._call_args(context))
        try:
            with _closed_channel_as_error():
                reply = cast(bytes, await call)
        except grpc.aio.AioRpcError as error:
            await self.relay_error(channel, error, context)
        await _relay_metadata(call, context)
        return reply

    async def unary_stream(
        self, method: str, address: str, request: bytes, context: Context
    ) -> AsyncIterator[bytes]:
        channel = self.channels.get(address)
        call = channel.unary_stream(method, None, None)(request, **self._call_args(context))
        async for reply in self._replies(channel, call, context):
            yield reply

    async def stream_stream(
        self, method: str, address: str, requests: AsyncIterator[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        channel = self.channels.get(address)
        call = channel.stream_stream(method, None, None)(requests, **self._call_args(context))
        async for reply in self._replies(channel, call, context):
            yield reply

    def _call_args(self, context: Context) -> dict[str, Any]:
        pairs = context.invocation_metadata() or ()
        metadata = [(k, v) for k, v in pairs if k not in _NOT_COPIED and not k.startswith(":")]
        metadata.append(self._marker)
        return {"metadata": tuple(metadata), "timeout": context.time_remaining()}

    async def _replies(
        self, channel: grpc.aio.Channel, call: Any, context: Context
    ) -> AsyncIterator[bytes]:
        try:
            with _closed_channel_as_error():
                initial = tuple(await call.initial_metadata() or ())
                if initial:
                    await context.send_initial_metadata(initial)
                async for reply in call:
                    yield cast(bytes, reply)
                trailing = tuple(await call.trailing_metadata() or ())
        except grpc.aio.AioRpcError as error:
            await self.relay_error(channel, error, context)
        finally:
            call.cancel()  # a no-op once the call ended; ends it when our caller left
        if trailing:
            context.set_trailing_metadata(trailing)

    def unavailable(self, channel: grpc.aio.Channel, error: grpc.aio.AioRpcError) -> bool:
        """Whether a forwarded call failed for want of a leader (UNAVAILABLE, or cut by
        our own retiring of the channel), which Ray's clients would replay."""
        code = error.code()
        cut = self.channels.is_retired(channel) or error.details() == CHANNEL_CLOSED
        return code is grpc.StatusCode.UNAVAILABLE or (code is grpc.StatusCode.CANCELLED and cut)

    async def relay_error(
        self, channel: grpc.aio.Channel, error: grpc.aio.AioRpcError, context: Context
    ) -> NoReturn:
        """End the call with the leader's status, details and trailing metadata (a call
        cut by our own retiring of the channel gets UNAVAILABLE instead of CANCELLED)."""
        code, details = error.code(), error.details() or ""
        if code is grpc.StatusCode.CANCELLED and self.unavailable(channel, error):
            code, details = grpc.StatusCode.UNAVAILABLE, "the leader changed during the call"
        trailing = cast(Metadata, tuple(error.trailing_metadata() or ()))
        await context.abort(code, details, trailing)
        raise AssertionError("context.abort returned")  # pragma: no cover


CHANNEL_CLOSED = "the channel to the former leader was closed during the call"


@contextlib.contextmanager
def _closed_channel_as_error() -> Iterator[None]:
    """Turn the CancelledError that grpc.aio raises in calls still in flight when their
    channel is closed (a retired leader channel, after its grace) into the AioRpcError
    CANCELLED the routing expects. Left as it was, it ended the caller's call with no
    status at all: a Ray client call without a deadline (CreateActor) then waited forever.
    A cancellation of this task itself (the caller left) propagates as usual."""
    try:
        yield
    except asyncio.CancelledError:
        if cancelled_itself():
            raise
        empty = grpc.aio.Metadata()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.CANCELLED, empty, empty, CHANNEL_CLOSED, CHANNEL_CLOSED
        ) from None


def never_sent(error: grpc.aio.AioRpcError) -> bool:
    """Whether a failed call never left this process: no connection to the leader could
    be made (gRPC's own wording), so sending it again cannot run it twice."""
    details = error.details() or ""
    return error.code() is grpc.StatusCode.UNAVAILABLE and details.startswith(
        "failed to connect to all addresses"
    )


async def _relay_metadata(call: Any, context: Context) -> None:
    """Pass the leader's initial and trailing metadata of a finished unary call on."""
    initial = tuple(await call.initial_metadata() or ())
    if initial:
        await context.send_initial_metadata(initial)
    trailing = tuple(await call.trailing_metadata() or ())
    if trailing:
        context.set_trailing_metadata(trailing)


class RoutingState:
    """What routing needs to know, read at each decision (all cheap, loop thread)."""

    def __init__(
        self,
        serving: Callable[[], bool],
        leader_is_self: Callable[[], bool],
        leader_address: Callable[[], str | None],
        closed: Callable[[], bool],
        next_change: Callable[[float], Awaitable[None]],
    ) -> None:
        self.serving = serving
        self.leader_is_self = leader_is_self
        self.leader_address = leader_address
        self.closed = closed
        self.next_change = next_change


class ForwardingInterceptor(Interceptor):
    """Routes Ray's GCS calls on a replica that does not serve (see the module docstring).

    `answers_locally(method)` names calls any replica answers itself (GetClusterId once
    the cluster id is known here)."""

    def __init__(
        self,
        state: RoutingState,
        forwarder: Forwarder,
        answers_locally: Callable[[str], bool],
        hold_s: float = HOLD_S,
    ) -> None:
        self._state = state
        self._forwarder = forwarder
        self._answers_locally = answers_locally
        self._hold_s = hold_s

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = details.method
        if not is_ray_gcs_method(method) or self._answers_locally(method):
            return await continuation(details)
        kind = method_kind(method)
        if kind is None:
            return await continuation(details)
        forwarded = any(k == FORWARDED_BY_KEY for k, _ in details.invocation_metadata or ())
        if kind is Kind.UNARY_UNARY:
            # Routed when the handler runs, not now: grpc.aio receives the request in
            # between, and a leader may be demoted meanwhile (its managers stopped).
            local = await continuation(details)
            return grpc.unary_unary_rpc_method_handler(
                functools.partial(self._route_unary, method, local, forwarded)
            )
        if self._state.serving():
            return await continuation(details)
        address, _, why = self._decide(forwarded)
        if address is None:
            return rejecting_handler(kind, grpc.StatusCode.UNAVAILABLE, why)
        return self._forwarder.handler(kind, method, address)

    def _decide(self, forwarded: bool) -> tuple[str | None, bool, str]:
        """(leader address to forward to, or None; whether waiting may help; why not)."""
        state = self._state
        if state.closed():
            return None, False, "this replica is shutting down; retry"
        if state.leader_is_self():
            return None, True, "this replica is becoming the leader; retry"
        if forwarded:
            return None, False, "forwarded to a replica that does not lead; retry"
        address = state.leader_address()
        if address is None:
            return None, True, "no GCS leader is known now; retry"
        if not self._forwarder.channels.reachable(address):
            return None, True, f"the GCS leader at {address} is unreachable; retry"
        return address, False, ""

    async def _route_unary(
        self,
        method: str,
        local: Handler | None,
        forwarded: bool,
        request: bytes,
        context: Context,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        until = loop.time() + self._hold_budget(context)
        attempted = False
        lost: str | None = None  # the leader the call was lost with, until LOST_WAIT_S
        lost_until = 0.0
        while True:
            if self._state.serving():
                return await _answer_locally(local, request, context)
            address, may_wait, why = self._decide(forwarded)
            if address is not None and address == lost and loop.time() < lost_until:
                address, may_wait = None, True  # the replay is for the next leader
                why = f"the GCS leader at {lost} was lost with the call; retry"
            if address is not None:
                channel = self._forwarder.channels.get(address)
                try:
                    return await self._forwarder.try_unary(channel, method, request, context)
                except grpc.aio.AioRpcError as error:
                    if not self._forwarder.unavailable(channel, error):
                        await self._forwarder.relay_error(channel, error, context)
                    if not never_sent(error) and not not_applied(error.trailing_metadata()):
                        # It may have run: replay only what a second run cannot
                        # change, once per leader it was lost with.
                        if method not in REPLAYABLE_METHODS or address == lost:
                            log.info("%s may have run on a lost leader: UNAVAILABLE", method)
                            await self._forwarder.relay_error(channel, error, context)
                        attempted = True
                        until = max(until, loop.time() + self._hold_budget(context))
                        lost, lost_until = address, loop.time() + LOST_WAIT_S
                    if until <= loop.time():
                        await self._forwarder.relay_error(channel, error, context)
                    may_wait, why = True, f"the GCS leader at {address} did not answer; retry"
            left = until - loop.time()
            if not may_wait or left <= 0:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, why, () if attempted else NOT_APPLIED
                )
            await self._state.next_change(left)

    def _hold_budget(self, context: Context) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self._hold_s
        return max(0.0, min(self._hold_s, remaining - DEADLINE_MARGIN_S))


async def _answer_locally(local: Handler | None, request: bytes, context: Context) -> bytes:
    """Run the typed unary handler on raw bytes (a held call, once this replica serves)."""
    if local is None or local.unary_unary is None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        raise AssertionError("context.abort returned")  # pragma: no cover
    parse = local.request_deserializer
    message = parse(request) if parse is not None else request  # parse_guard: no parser
    reply = await local.unary_unary(message, cast(Any, context))
    serialize = local.response_serializer
    return cast(bytes, serialize(reply) if serialize is not None else reply)


def outbound_marker(node_id: str) -> Sequence[tuple[str, str]]:
    """The metadata a replica's own calls to the leader carry (never forwarded again)."""
    return ((FORWARDED_BY_KEY, node_id),)
