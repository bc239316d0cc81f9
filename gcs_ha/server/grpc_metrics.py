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
        self._methods: dict[str, _MethodMetrics] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        metrics = self._methods.get(details.method)
        if metrics is None:
            metrics = self._methods[details.method] = self._for(details.method)
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(_timed, handler.unary_unary, metrics),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _for(self, full_method: str) -> _MethodMetrics:
        service, _, method = full_method.lstrip("/").rpartition("/")
        return _MethodMetrics(
            self._seconds.labels(service, method).observe,
            functools.partial(self._handled.labels, service, method),
        )


class _MethodMetrics:
    """One method's children, looked up once (a call then takes no registry lock)."""

    def __init__(self, observe: Callable[[float], None], by_code: Callable[[str], Any]) -> None:
        self.observe = observe
        self._by_code = by_code
        self._counts: dict[str, Callable[[], None]] = {}

    def count(self, code: str) -> None:
        inc = self._counts.get(code)
        if inc is None:
            inc = self._counts[code] = self._by_code(code).inc
        inc()


async def _timed(behavior: Any, metrics: _MethodMetrics, request: Any, context: Context) -> Any:
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
        metrics.observe(time.perf_counter() - started)
        metrics.count(code)


def _code_of(context: Context, default: str) -> str:
    code = context.code()
    if code is None:
        return default
    return str(code.name) if isinstance(code, grpc.StatusCode) else str(getattr(code, "name", code))
