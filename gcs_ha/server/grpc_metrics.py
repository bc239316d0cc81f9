"""Per-method gRPC metrics of a replica's port (outermost interceptor).

`RpcMetricsInterceptor` counts every unary call a handler exists for, by service, method
and status code (`gcs_ha_grpc_server_handled_total`), and times it from the moment its
handler starts to its answer (`gcs_ha_grpc_server_handling_seconds`): what the caller
waits for here, a forwarded call's trip to the leader included. Streaming calls (Ray's
syncer stream, the admin Backup) pass untouched: every other call of Ray's GCS is unary.
Calls of methods no service declares are not counted: a client cannot grow the label
set with made-up names.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from gcs_ha.metrics_support import PREFIX, RPC_BUCKETS
from gcs_ha.server.forwarding import Context, Handler, Interceptor


class RpcMetricsInterceptor(Interceptor):
    """See the module docstring."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_service", "grpc_method"]
        self._handled = Counter(
            f"{PREFIX}_grpc_server_handled_total",
            "gRPC calls answered, by method and status code",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self._seconds = Histogram(
            f"{PREFIX}_grpc_server_handling_seconds",
            "time from a unary call's handler start to its answer",
            labels,
            buckets=RPC_BUCKETS,
            registry=registry,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(self._unary, handler.unary_unary, service, method),
            handler.request_deserializer,
            handler.response_serializer,
        )

    async def _unary(
        self, behavior: Any, service: str, method: str, request: Any, context: Context
    ) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            reply = await behavior(request, context)
            code = _code_of(context, "OK")
            return reply
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except BaseException:
            code = _code_of(context, "UNKNOWN")
            raise
        finally:
            self._seconds.labels(service, method).observe(time.perf_counter() - started)
            self._handled.labels(service, method, code).inc()


def _code_of(context: Context, default: str) -> str:
    code = context.code()
    return default if code is None else _name(code)


def _name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return str(getattr(code, "name", code))
