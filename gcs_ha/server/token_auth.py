"""The server side of Ray's token authentication (gcs_ha.ray_auth).

`TokenAuthInterceptor` is the outermost interceptor when RAY_AUTH_MODE=token: a call of
any service but the health check and gcs-ha's admin service (which checks its own
credential, gcs_ha.admin_auth) without `authorization: Bearer <the token>` ends at once
with UNAUTHENTICATED "InvalidAuthToken: ...", as Ray's GCS answers it; nothing else runs,
not even forwarding to the leader. The check reads the call's metadata before any
handler is built, so an accepted call costs one scan of its metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import grpc

from gcs_ha.ray_auth import REJECTED, RayAuth
from gcs_ha.server.forwarding import (
    Handler,
    Interceptor,
    method_kind,
    rejecting_handler,
    service_of,
)

# Services that answer without Ray's token: load balancers and supervisors probe health
# (Ray's GCS lets it through too); the admin service has its own credential.
OPEN_SERVICES: Final = frozenset({"grpc.health.v1.Health", "gcs_ha.admin.AdminService"})


class TokenAuthInterceptor(Interceptor):
    """Refuses calls without Ray's token (see the module doc)."""

    def __init__(self, auth: RayAuth) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        if self._auth.accepts(details.invocation_metadata) or (
            service_of(details.method) in OPEN_SERVICES
        ):
            return await continuation(details)
        kind = method_kind(details.method)
        if kind is None:  # an unknown method stays UNIMPLEMENTED
            return await continuation(details)
        return rejecting_handler(kind, grpc.StatusCode.UNAUTHENTICATED, REJECTED)
