"""One synchronous call of Ray's InternalKV protocol to one replica, for tests that need a
single put or get where it lands (no leader discovery; kvload.KvClient for loads).

`put` returns (gRPC code, details): OK, or how it was refused; with `retry_s` it sends the
put again after UNAVAILABLE (an election) for that long. `get` returns the value, or None
when the key is missing or the call failed.
"""

from __future__ import annotations

import time

import grpc

from gcs_ha.proto.ray import gcs_service_pb2 as gcs_pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as gcs_grpc
from gcs_ha.server.status import RAY_OK

Outcome = tuple[grpc.StatusCode, str]


def put(
    address: str,
    namespace: bytes,
    key: bytes,
    value: bytes,
    *,
    timeout_s: float = 30.0,
    retry_s: float = 0.0,
) -> Outcome:
    """InternalKVPut at `address`: (OK, "") or the refusal's (code, details)."""
    request = gcs_pb.InternalKVPutRequest(namespace=namespace, key=key, value=value)
    deadline = time.monotonic() + retry_s
    with grpc.insecure_channel(address) as channel:
        stub = gcs_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        while True:
            try:
                reply = stub.InternalKVPut(request, timeout=timeout_s)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                if code is grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                return code, exc.details() or ""
            if reply.status.code != RAY_OK:
                return grpc.StatusCode.UNKNOWN, reply.status.message
            return grpc.StatusCode.OK, ""


def get(address: str, namespace: bytes, key: bytes, *, timeout_s: float = 10.0) -> bytes | None:
    """InternalKVGet at `address`: the value, or None (missing key, failed call)."""
    request = gcs_pb.InternalKVGetRequest(namespace=namespace, key=key)
    with grpc.insecure_channel(address) as channel:
        stub = gcs_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            reply = stub.InternalKVGet(request, timeout=timeout_s)
        except grpc.RpcError:
            return None
    return bytes(reply.value) if reply.status.code == RAY_OK else None


def delete(address: str, namespace: bytes, key: bytes, *, timeout_s: float = 30.0) -> int:
    """InternalKVDel at `address`: how many keys went (grpc.RpcError if the call failed,
    AssertionError if it was refused)."""
    request = gcs_pb.InternalKVDelRequest(namespace=namespace, key=key)
    with grpc.insecure_channel(address) as channel:
        stub = gcs_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.InternalKVDel(request, timeout=timeout_s)
    assert reply.status.code == RAY_OK, reply.status.message
    return int(reply.deleted_num)
