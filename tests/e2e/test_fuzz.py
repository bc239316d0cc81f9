"""Random and mutated requests to every method of a 3-replica cluster (Hypothesis).

Every method of Ray's GCS services, the admin service and the health service, on every
replica (so followers forward garbage to the leader too), gets random bytes, and
requests whose fields are filled at random, then truncated or with bytes flipped. The
admin calls carry no credential. Afterwards: no replica exited, every replica has the
same table digest at the same applied index, and the cluster still serves. Every answer
must be a status: a call that runs into its deadline is a hang, except on the methods
that wait by design (long polls, streams).

Random requests name random addresses (nodes, workers) that the GCS then calls, so the
cluster and this test run in a network namespace of their own with only a loopback
interface (`unshare -n`): nothing can leave the machine. The outer test starts the inner
one there; without `unshare` and root it is skipped.

Ports: 11400-11499 (this file).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gcs_ha.proto.ray
from gcs_ha.drill import checks
from gcs_ha.proto import admin_pb2  # noqa: F401  (registers the admin service)
from gcs_ha.server.forwarding import RAY_GCS_SERVICES
from gcs_ha.testing import namespaces
from gcs_ha.testing.cluster import ProcessCluster

INSIDE = "GCS_HA_FUZZ_INSIDE"
GCS_PORT, RAFT_PORT = 11400, 11410
CALL_TIMEOUT_S = 2.0
EXAMPLES = int(os.environ.get("GCS_HA_FUZZ_EXAMPLES", "500"))
SERVICES = (*sorted(RAY_GCS_SERVICES), "gcs_ha.admin.AdminService", "grpc.health.v1.Health")
# Methods that wait by design: a deadline there is the method working, not a hang.
WAITING = {
    "ray.rpc.ControlPlanePubSubGcsService/GcsSubscriberPoll",  # long polls
    "ray.rpc.ObservabilityPubSubService/GcsSubscriberPoll",
    "ray.rpc.syncer.RaySyncer/StartSync",  # a stream for the node's lifetime
    "grpc.health.v1.Health/Watch",  # a stream of status changes
    "ray.rpc.PlacementGroupInfoGcsService/WaitPlacementGroupUntilReady",
}
# What an admin call without a credential may get: refused, or its bytes did not parse.
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT}
# An unhandled error in a servicer is UNKNOWN; INTERNAL is a storage failure.
BUGS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# Known and left alone (docs/robustness.md): a malformed RaySyncer stream sent through a
# follower, refused by the leader while the caller still sends, sometimes ends as grpc's
# INTERNAL "Internal error from Core" instead of the leader's INVALID_ARGUMENT.
KNOWN = {("ray.rpc.syncer.RaySyncer/StartSync", "Internal error from Core")}

for module in pkgutil.iter_modules(gcs_ha.proto.ray.__path__):
    if module.name.endswith("_pb2"):
        importlib.import_module(f"gcs_ha.proto.ray.{module.name}")
from grpc_health.v1 import health_pb2  # noqa: E402, F401  (registers the health service)


def methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    found = []
    for name in SERVICES:
        try:
            found.extend(pool.FindServiceByName(name).methods)
        except KeyError:
            continue  # a service we do not serve
    return found


METHODS = methods()

SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.CPPTYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.CPPTYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.CPPTYPE_FLOAT: st.floats(width=32, allow_nan=True),
    FieldDescriptor.CPPTYPE_BOOL: st.booleans(),
    FieldDescriptor.CPPTYPE_ENUM: st.integers(-2, 12),
}


def scalar(field: FieldDescriptor, data: st.DataObject) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return data.draw(st.text(max_size=40))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return data.draw(st.one_of(st.binary(max_size=40), st.binary(min_size=28, max_size=28)))
    return data.draw(SCALARS[field.cpp_type])


def fill(message: Any, data: st.DataObject, depth: int = 0) -> None:
    """Set a random subset of `message`'s fields to random values (nested 2 deep)."""
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans()):
            continue
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if is_message and (depth >= 2 or field.message_type.GetOptions().map_entry):
            continue
        repeated = field.is_repeated
        for _ in range(data.draw(st.integers(1, 3)) if repeated else 1):
            if is_message:
                sub = getattr(message, field.name)
                fill(sub.add() if repeated else sub, data, depth + 1)
            elif repeated:
                getattr(message, field.name).append(scalar(field, data))
            else:
                setattr(message, field.name, scalar(field, data))


def payload(input_type: Descriptor, data: st.DataObject) -> bytes:
    """Random bytes, or a random request, maybe truncated or with a byte flipped."""
    if data.draw(st.integers(0, 4)) == 0:
        return bytes(data.draw(st.binary(max_size=300)))
    message = message_factory.GetMessageClass(input_type)()
    fill(message, data)
    raw = bytearray(message.SerializeToString())
    mutation = data.draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if raw and mutation == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    elif raw and mutation == "flip":
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    return bytes(raw)


def call(
    channel: grpc.Channel, method: MethodDescriptor, request: bytes
) -> tuple[grpc.StatusCode, str]:
    """The status and details of one call (OK when it answered); streams are read to
    their end."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.client_streaming:
            requests = iter([request, request])
            if method.server_streaming:
                list(channel.stream_stream(path)(requests, timeout=CALL_TIMEOUT_S))
            else:
                channel.stream_unary(path)(requests, timeout=CALL_TIMEOUT_S)
        elif method.server_streaming:
            list(channel.unary_stream(path)(request, timeout=CALL_TIMEOUT_S))
        else:
            channel.unary_unary(path)(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def admin_refusal_expected(method: MethodDescriptor) -> bool:
    """Every admin call but Status needs the cluster secret."""
    return method.containing_service.name == "AdminService" and method.name != "Status"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    if not os.environ.get(INSIDE):
        pytest.skip("runs inside its own network namespace (test_fuzz_in_a_network_namespace)")
    with ProcessCluster(3, tmp_path_factory.mktemp("fuzz"), GCS_PORT, RAFT_PORT) as c:
        c.start()
        c.wait_for_members(3, c.wait_for_leader(timeout=60), timeout=60)
        yield c


def test_fuzz_every_method(cluster: ProcessCluster) -> None:
    """The inner test (see the module doc)."""
    channels = [grpc.insecure_channel(cluster.gcs_address(i)) for i in range(3)]
    found: dict[str, set[str]] = {}
    problems: dict[str, str] = {}  # method -> the first problem it showed

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one_call(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS))
        channel = channels[data.draw(st.integers(0, 2))]
        request = payload(method.input_type, data)
        code, details = call(channel, method, request)
        name = f"{method.containing_service.full_name}/{method.name}"
        found.setdefault(name, set()).add(code.name)
        problem = None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and name not in WAITING:
            problem = "hung"
        elif code in BUGS and (name, details) not in KNOWN:
            problem = f"answered {code.name}: {details[:200]}"
        elif admin_refusal_expected(method) and code not in REFUSED:
            problem = f"answered {code.name} without a credential"
        if problem is not None:
            problems.setdefault(name, f"{problem} (request {request[:60]!r})")

    try:
        one_call()
    finally:
        for channel in channels:
            channel.close()
        print({name: sorted(codes) for name, codes in sorted(found.items())})
    assert not problems, "\n".join(f"{name}: {what}" for name, what in sorted(problems.items()))
    assert all(cluster.is_running(i) and cluster.process(i).poll() is None for i in range(3))  # type: ignore[union-attr]
    replicas = {cluster.node_id(i): cluster.gcs_address(i) for i in range(3)}
    digests = checks.digests(replicas, cluster.admin_key)
    assert len(digests) == 3 and len(set(digests.values())) == 1, digests
    assert len(found) >= len(METHODS) // 2  # Hypothesis spread its calls over the methods


@pytest.mark.slow
def test_fuzz_in_a_network_namespace(tmp_path: Path) -> None:
    if os.environ.get(INSIDE):
        pytest.skip("already inside")
    if (why := namespaces.missing()) is not None:
        pytest.skip(why)
    inner = f"{Path(__file__)}::test_fuzz_every_method"
    proc = namespaces.run_test_inside(inner, INSIDE, tmp_path / "inner")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout, proc.stdout[-3000:]
