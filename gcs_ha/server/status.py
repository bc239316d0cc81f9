"""The one place where gcs-ha errors become gRPC statuses, and back.

Servers raise `gcs_ha.errors` exceptions; `abort_with_error` turns one into a gRPC status
with `grpc_status_for`. Clients turn a failed call back into the same exception tree
with `error_from_rpc`. Ray's own services answer domain errors in the reply's `status`
field instead, and everything that means "not here, not now" as UNAVAILABLE. Both
mapping tables: DESIGN.md, "Errors -> gRPC statuses".
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, NoReturn, cast

import grpc
import grpc.aio

from gcs_ha.errors import (
    AdminAuthError,
    AlreadyExistsError,
    ConfigError,
    GcsHaError,
    InvalidRequestError,
    InvalidStateError,
    NotFoundError,
    NotLeaderError,
    ResourceExhaustedError,
    StorageError,
    StoreFullError,
    UnavailableError,
    UnknownOutcomeError,
)

# Trailing-metadata key carrying the leader's GCS address with FAILED_PRECONDITION.
LEADER_HINT_KEY = "gcs-ha-leader"
# Trailing metadata of an UNAVAILABLE that certainly did not run the call's write (refused
# before anything was proposed): a client, or a forwarding replica, may send it again
# without risking running it twice. Without it, an UNAVAILABLE call may have taken effect.
NOT_APPLIED_KEY = "gcs-ha-not-applied"
NOT_APPLIED: tuple[tuple[str, str], ...] = ((NOT_APPLIED_KEY, "1"),)


def not_applied(trailing: Iterable[Any] | None) -> bool:
    """Whether a failed call's trailing metadata (key, value pairs) says it was refused
    before running."""
    return any(item[0] == NOT_APPLIED_KEY for item in trailing or ())


_TO_GRPC: dict[type[GcsHaError], grpc.StatusCode] = {
    NotLeaderError: grpc.StatusCode.FAILED_PRECONDITION,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    UnknownOutcomeError: grpc.StatusCode.UNAVAILABLE,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    AdminAuthError: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StorageError: grpc.StatusCode.INTERNAL,
    GcsHaError: grpc.StatusCode.UNKNOWN,
}

_FROM_GRPC: dict[grpc.StatusCode, type[GcsHaError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AdminAuthError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.INTERNAL: StorageError,
}


# Ray's StatusCode numbers (src/ray/common/status.h in Ray 2.60).
RAY_OK = 0
RAY_INVALID = 4
RAY_CREATION_TASK_ERROR = 16
RAY_NOT_FOUND = 17
RAY_SCHEDULING_CANCELLED = 19
RAY_ALREADY_EXISTS = 20
RAY_INVALID_ARGUMENT = 34

_TO_RAY: dict[type[GcsHaError], int] = {
    NotFoundError: RAY_NOT_FOUND,
    InvalidRequestError: RAY_INVALID_ARGUMENT,
    AlreadyExistsError: RAY_ALREADY_EXISTS,
    InvalidStateError: RAY_INVALID,
}


def cancelled_itself() -> bool:
    """While handling asyncio.CancelledError in a call's task: True when that task itself
    is being cancelled (the call ended), False when the error came from awaited work that
    something else cancelled (which must still be answered with a status)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def ray_status_for(error: GcsHaError) -> tuple[int, str] | None:
    """The Ray StatusCode and message for a domain error, or None when the error is not
    one (then the call is aborted with `abort_ray_call`)."""
    for cls in type(error).__mro__:
        if cls in _TO_RAY:
            return _TO_RAY[cls], str(error) or cls.__name__
    return None


async def abort_ray_call(
    context: grpc.aio.ServicerContext[object, object], error: GcsHaError
) -> NoReturn:
    """End a call of one of Ray's services that cannot be answered here and now:
    UNAVAILABLE (Ray's clients retry) unless the error is a storage failure (INTERNAL) or
    a full store (RESOURCE_EXHAUSTED: retrying cannot help, and Ray's clients would retry
    UNAVAILABLE for 60 s and then exit); marked NOT_APPLIED when this replica refused it
    before proposing anything (NotLeaderError, StoreFullError)."""
    if isinstance(error, StorageError):
        await context.abort(grpc.StatusCode.INTERNAL, str(error))
    if isinstance(error, StoreFullError):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), NOT_APPLIED)
    message = str(error) or type(error).__name__
    if isinstance(error, NotLeaderError) and error.leader_hint:
        message = f"{message}; leader at {error.leader_hint}"
    trailing = NOT_APPLIED if isinstance(error, NotLeaderError) else ()
    await context.abort(grpc.StatusCode.UNAVAILABLE, message, trailing)
    raise AssertionError("context.abort returned")  # pragma: no cover


def grpc_status_for(error: GcsHaError) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message that carry `error` to a client."""
    code = next(_TO_GRPC[cls] for cls in type(error).__mro__ if cls in _TO_GRPC)
    message = str(error) or type(error).__name__
    if isinstance(error, NotLeaderError) and error.leader_hint:
        message = f"{message}; leader at {error.leader_hint}"
    return code, message


async def abort_with_error(
    context: grpc.aio.ServicerContext[object, object], error: GcsHaError
) -> NoReturn:
    """End the current RPC with the status mapped from `error` (never returns)."""
    code, message = grpc_status_for(error)
    if isinstance(error, NotLeaderError) and error.leader_hint:
        context.set_trailing_metadata(((LEADER_HINT_KEY, error.leader_hint),))
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


Trailing = tuple[tuple[str, str | bytes], ...]


def _parts(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, Trailing]:
    """(code, details, trailing metadata) of a failed sync or asyncio call."""
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        code = error.code()
        # At run time both kinds of call yield (key, value) pairs (the stubs disagree).
        pairs = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
        return code, error.details() or code.name, tuple(pairs)
    return grpc.StatusCode.UNKNOWN, str(error) or "UNKNOWN", ()


def leader_hint_of(error: grpc.RpcError) -> str | None:
    """The leader's GCS address a FAILED_PRECONDITION reply carried, if any."""
    _, _, trailing = _parts(error)
    for key, value in trailing:
        if key == LEADER_HINT_KEY and isinstance(value, str) and value:
            return value
    return None


def error_from_rpc(error: grpc.RpcError, address: str) -> GcsHaError:
    """The gcs_ha.errors exception a failed call to `address` stands for."""
    code, details, _ = _parts(error)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return NotLeaderError(f"{address}: {details}", leader_hint=leader_hint_of(error))
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:
        return UnavailableError(f"cannot reach {address}: no gcs-ha replica answers there")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UnavailableError(f"{address} did not answer in time")
    return _FROM_GRPC.get(code, GcsHaError)(f"{address}: {details}")
