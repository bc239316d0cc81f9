"""The load generator of `gcs-ha bench kv`: Ray's own InternalKV client stubs under load.

    python -m gcs_ha.bench.kv_client --address HOST:PORT ...

Imports only grpc and `ray.core.generated` (never gcs_ha.proto). Prints JSON lines on
stdout (window_start, window_end, point; see DESIGN.md, "`bench kv`"). Errors are counted,
not raised; exit code 2 when the server never became ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

from gcs_ha.bench.stats import percentile

# Ray's generated modules, untyped for mypy (their messages are built at import time).
pb: Any = gcs_service_pb2
pb_grpc: Any = gcs_service_pb2_grpc

NAMESPACE = b"bench"
CALL_TIMEOUT_S = 30.0
ERROR_PAUSE_S = 0.01
READY_POLL_S = 0.2

Call = Callable[[int, int], Awaitable[bool]]  # (client id, sequence number) -> ok


@dataclass
class Window:
    """The measurement window of one point and what the clients saw in it."""

    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_s: float = 0.0


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def mark_window(window: Window, op: str, clients: int) -> None:
    """Announce the window's edges when they pass; measure this process's CPU in it."""
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    emit({"event": "window_start", "op": op, "clients": clients})
    cpu = time.process_time()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    window.cpu_s = time.process_time() - cpu
    emit({"event": "window_end", "op": op, "clients": clients})


class KvLoad:
    """Put and Get calls through Ray's InternalKVGcsService stub."""

    def __init__(self, stub: Any, value_bytes: int, keyspace: int) -> None:
        self.stub = stub
        self.value = b"v" * value_bytes
        self.keyspace = keyspace
        self.point = ""  # set per point, so Put keys never repeat within a run

    async def put(self, client: int, seq: int) -> bool:
        """A Put of a new key (unique per point, client and sequence number)."""
        request = pb.InternalKVPutRequest(
            namespace=NAMESPACE,
            key=f"p/{self.point}/{client}/{seq}".encode(),
            value=self.value,
            overwrite=True,
        )
        reply = await self.stub.InternalKVPut(request, timeout=CALL_TIMEOUT_S)
        return bool(reply.status.code == 0)

    async def get(self, client: int, seq: int) -> bool:
        """A Get of one of the preloaded keys, cycling through them."""
        key = self.get_key((client * 7919 + seq) % self.keyspace)
        reply = await self.stub.InternalKVGet(
            pb.InternalKVGetRequest(namespace=NAMESPACE, key=key), timeout=CALL_TIMEOUT_S
        )
        return bool(reply.status.code == 0 and len(reply.value) == len(self.value))

    @staticmethod
    def get_key(i: int) -> bytes:
        return f"g/{i}".encode()

    async def preload(self, concurrency: int = 16) -> None:
        """Write the keys the Get points read (Ray status errors raise RuntimeError)."""

        async def writer(first: int) -> None:
            for i in range(first, self.keyspace, concurrency):
                request = pb.InternalKVPutRequest(
                    namespace=NAMESPACE, key=self.get_key(i), value=self.value, overwrite=True
                )
                reply = await self.stub.InternalKVPut(request, timeout=CALL_TIMEOUT_S)
                if reply.status.code != 0:
                    raise RuntimeError(f"preload put failed: {reply.status.message}")

        await asyncio.gather(*(writer(c) for c in range(concurrency)))


async def wait_ready(stub: Any, timeout_s: float) -> bool:
    """True once the server answers an InternalKVGet (any Ray status) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await stub.InternalKVGet(
                pb.InternalKVGetRequest(namespace=NAMESPACE, key=b"ready?"), timeout=2.0
            )
            return True
        except grpc.RpcError:
            await asyncio.sleep(READY_POLL_S)
    return False


async def client_loop(call: Call, client: int, window: Window) -> None:
    """Sequential calls until the window ends; records those that complete inside it."""
    seq = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= window.end:
            return
        try:
            ok = await call(client, seq)
        except grpc.RpcError:
            ok = False
        t1 = time.perf_counter()
        seq += 1
        if window.start <= t1 <= window.end:
            if ok:
                window.latencies.append(t1 - t0)
            else:
                window.errors += 1
        if not ok:
            await asyncio.sleep(ERROR_PAUSE_S)


async def run_point(
    call: Call, op: str, clients: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """One point: `clients` tasks calling `call`; returns its JSON record."""
    now = time.perf_counter()
    window = Window(start=now + warmup_s, end=now + warmup_s + duration_s)
    marker = mark_window(window, op, clients)
    await asyncio.gather(marker, *(client_loop(call, c, window) for c in range(clients)))
    ordered = sorted(window.latencies)
    return {
        "event": "point",
        "op": op,
        "clients": clients,
        "ops": len(ordered),
        "seconds": duration_s,
        "ops_per_s": round(len(ordered) / duration_s, 1),
        "p50_ms": round(percentile(ordered, 50) * 1000.0, 3),
        "p99_ms": round(percentile(ordered, 99) * 1000.0, 3),
        "errors": window.errors,
        "client_cores": round(window.cpu_s / duration_s, 3),
    }


async def run(args: argparse.Namespace) -> bool:
    """Every point of one system, in order; False if the server never became ready."""
    async with grpc.aio.insecure_channel(args.address) as channel:
        stub = pb_grpc.InternalKVGcsServiceStub(channel)
        if not await wait_ready(stub, args.ready_timeout):
            return False
        load = KvLoad(stub, args.value_bytes, args.keyspace)
        calls: dict[str, Call] = {"put": load.put, "get": load.get}
        if "get" in args.ops:
            await load.preload()
        for op in args.ops:
            for n in args.clients:
                load.point = f"{op}{n}"
                emit(await run_point(calls[op], op, n, args.warmup, args.duration))
        return True


def _csv(kind: type[Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kv_client", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT of the GCS gRPC port")
    parser.add_argument("--ops", type=_csv(str), default=["put", "get"])
    parser.add_argument("--clients", type=_csv(int), default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--keyspace", type=int, default=1024, help="keys the Gets cycle over")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    unknown = set(args.ops) - {"put", "get"}
    if unknown:
        parser.error(f"unknown ops: {sorted(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not asyncio.run(run(args)):
        print(
            f"kv_client: {args.address} did not answer in {args.ready_timeout} s", file=sys.stderr
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
