"""Ray's token authentication on gcs-ha, side by side with Ray's own gcs_server.

Both run with RAY_AUTH_MODE=token and the same token. Every kind of caller (no token,
a wrong one, the token without "Bearer ", the right one) gets the same answer from a
gcs-ha leader, a gcs-ha follower (which checks before forwarding) and Ray's gcs_server:
the same gRPC code and the same details. The health check answers without a token on
both; gcs-ha's admin Status too (it has its own credential, docs/security.md).

Ports: 11200-11299 (this file).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.admin_client import AdminClient
from gcs_ha.bench.kv_systems import ray_gcs_command
from gcs_ha.processes import spawn, terminate_all
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

GCS_PORT, RAFT_PORT, RAY_GCS_PORT = 11200, 11210, 11290
TOKEN = secrets.token_hex(16)
TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
CALLERS = {
    "none": (),
    "wrong": (("authorization", "Bearer " + TOKEN[::-1]),),
    "no bearer": (("authorization", TOKEN),),
    "right": (("authorization", "Bearer " + TOKEN),),
}


@pytest.fixture(scope="module")
def ray_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Ray's gcs_server from the wheel, in token mode, in memory."""
    session = tmp_path_factory.mktemp("ray-gcs")
    proc = spawn(ray_gcs_command(session, RAY_GCS_PORT), session / "gcs_server.log", TOKEN_ENV)
    address = f"127.0.0.1:{RAY_GCS_PORT}"
    try:
        wait_until(lambda: answer(address, CALLERS["right"])[0] == "OK" or None, 30, "no Ray GCS")
        yield address
    finally:
        terminate_all([proc], 10.0)


@pytest.fixture(scope="module")
def gcs_ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    base = tmp_path_factory.mktemp("gcs-ha")
    cluster = ProcessCluster(3, base, GCS_PORT, RAFT_PORT, replica_env=lambda i: TOKEN_ENV)
    with cluster:
        cluster.start()
        cluster.wait_for_members(3, cluster.wait_for_leader(timeout=60), timeout=60)
        yield cluster


def answer(address: str, metadata: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """(status code name, details) of one InternalKVGet."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.InternalKVGetRequest(namespace=b"n", key=b"k")
        try:
            stub.InternalKVGet(request, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", ""


def health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


@pytest.mark.parametrize("caller", list(CALLERS))
def test_every_caller_gets_rays_answer(ray_gcs: str, gcs_ha: ProcessCluster, caller: str) -> None:
    expected = answer(ray_gcs, CALLERS[caller])
    assert expected[0] == ("OK" if caller == "right" else "UNAUTHENTICATED"), expected
    leader = gcs_ha.wait_for_leader()
    for i in sorted(gcs_ha.members):  # the leader and both followers (which forward)
        assert answer(gcs_ha.gcs_address(i), CALLERS[caller]) == expected, (i, leader)


def test_health_and_status_need_no_token(ray_gcs: str, gcs_ha: ProcessCluster) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health(ray_gcs) == serving
    leader = gcs_ha.wait_for_leader()
    assert health(gcs_ha.gcs_address(leader)) == serving
    with AdminClient(gcs_ha.gcs_address(leader), 5.0) as client:
        assert client.status().role == "leader"


def test_a_replica_refuses_to_start_in_token_mode_without_a_token(tmp_path: Path) -> None:
    cluster = ProcessCluster(
        1, tmp_path, GCS_PORT + 50, RAFT_PORT + 50,
        replica_env=lambda i: {"RAY_AUTH_MODE": "token", "HOME": str(tmp_path)},
    )  # fmt: skip
    with cluster:
        cluster.start()
        process = cluster.process(0)
        assert process is not None
        assert process.wait(60) == 2
    assert "RAY_AUTH_MODE=token but no token" in cluster.log_path(0).read_text()
