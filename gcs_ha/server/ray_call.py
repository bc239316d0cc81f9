"""Running one call of Ray's GCS services: the handler's domain errors become the reply's
`status`, availability errors abort the call (gcs_ha.server.status has the table).

A handler that raises asyncio.CancelledError although its own call was not cancelled (it
awaited work that a demotion cancelled: a manager's background write, another call's
pending registration) is answered UNAVAILABLE. Left alone, grpc.aio ends such a call
without sending any status, and a Ray client call without a deadline (CreateActor) then
waits forever: found as actors stuck DEPENDENCIES_UNREADY after leader changes during a
burst of registrations (tests/integration/test_ray_call.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc.aio

from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.server.status import abort_ray_call, cancelled_itself, ray_status_for

Context = grpc.aio.ServicerContext[Any, Any]


class _GcsStatus(Protocol):
    code: int
    message: str

    def SetInParent(self) -> None: ...


class RayReply(Protocol):
    """A reply of Ray's GCS services: every one has a GcsStatus `status`."""

    @property
    def status(self) -> _GcsStatus: ...


R = TypeVar("R", bound=RayReply)


async def ray_call(context: Context, reply: R, handler: Callable[[R], Awaitable[None]]) -> R:
    """Run `handler(reply)`, which fills `reply`; on a domain error set reply.status.
    A success carries an empty `status {}`, as Ray's GCS sends it."""
    reply.status.SetInParent()
    try:
        await handler(reply)
    except GcsHaError as error:
        status = ray_status_for(error)
        if status is None:
            await abort_ray_call(context, error)
        reply.status.code, reply.status.message = status
    except asyncio.CancelledError:
        if cancelled_itself():
            raise
        await abort_ray_call(context, UnavailableError(CUT_SHORT))
    return reply


CUT_SHORT = "the GCS leader stepped down during the call; retry"
