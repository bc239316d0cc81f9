"""Running one call of Ray's GCS services: the handler's domain errors become the reply's
`status`, availability errors abort the call (gcs_ha.server.status has the table)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc.aio

from gcs_ha.errors import GcsHaError
from gcs_ha.server.status import abort_ray_call, ray_status_for

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
    return reply
