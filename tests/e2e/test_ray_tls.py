"""Ray's TLS (RAY_USE_TLS=1) on gcs-ha, side by side with Ray's own gcs_server.

Both serve with the same CA and certificate (gcs_ha.testing.tls_certs). A plaintext
client and a TLS client without a client certificate are turned away by both; a client
with the certificate gets an answer from Ray's gcs_server, from a gcs-ha leader and from
gcs-ha followers (which forward to the leader over TLS). The admin CLI's client follows
RAY_USE_TLS too. A replica told to use TLS without its certificate files refuses to start.

Ports: 11300-11399 (this file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gcs_ha.admin_client import AdminClient
from gcs_ha.bench.kv_systems import ray_gcs_command
from gcs_ha.processes import spawn, terminate_all
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.ray_tls import CA_ENV, CERT_ENV, KEY_ENV, USE_TLS_ENV, load_ray_tls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.tls_certs import write_certs

GCS_PORT, RAFT_PORT, RAY_GCS_PORT = 11300, 11310, 11390


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Certificates for 127.0.0.1, and this process's environment set to use them (the
    harness's own admin calls then go over TLS)."""
    env = write_certs(tmp_path_factory.mktemp("certs"), ["127.0.0.1", "localhost"])
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def ray_gcs(tmp_path_factory: pytest.TempPathFactory, tls_env: dict[str, str]) -> Iterator[str]:
    session = tmp_path_factory.mktemp("ray-gcs")
    proc = spawn(ray_gcs_command(session, RAY_GCS_PORT), session / "gcs_server.log", tls_env)
    address = f"127.0.0.1:{RAY_GCS_PORT}"
    try:
        wait_until(lambda: kv_get(address, "mtls") == "OK" or None, 30, "no Ray GCS over TLS")
        yield address
    finally:
        terminate_all([proc], 10.0)


@pytest.fixture(scope="module")
def gcs_ha(
    tmp_path_factory: pytest.TempPathFactory, tls_env: dict[str, str]
) -> Iterator[ProcessCluster]:
    base = tmp_path_factory.mktemp("gcs-ha")
    with ProcessCluster(3, base, GCS_PORT, RAFT_PORT, replica_env=lambda i: tls_env) as cluster:
        cluster.start()
        cluster.wait_for_members(3, cluster.wait_for_leader(timeout=60), timeout=60)
        yield cluster


def channel(address: str, kind: str) -> grpc.Channel:
    if kind == "plain":
        return grpc.insecure_channel(address)
    tls = load_ray_tls(os.environ)  # this process's, set by `tls_env`
    assert tls is not None
    if kind == "no client cert":
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(tls.ca))
    return grpc.secure_channel(address, tls.channel_credentials())


def kv_get(address: str, kind: str) -> str:
    """ "OK" or the gRPC code name of one InternalKVGet over a channel of `kind`."""
    with channel(address, kind) as ch:
        stub = pb_grpc.InternalKVGcsServiceStub(ch)  # type: ignore[no-untyped-call]
        try:
            stub.InternalKVGet(pb.InternalKVGetRequest(namespace=b"n", key=b"k"), timeout=5)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return "OK"


@pytest.mark.parametrize("kind", ["plain", "no client cert", "mtls"])
def test_every_client_gets_what_rays_gcs_gives(
    ray_gcs: str, gcs_ha: ProcessCluster, kind: str
) -> None:
    expected = kv_get(ray_gcs, kind)
    assert expected == ("OK" if kind == "mtls" else "UNAVAILABLE")
    gcs_ha.wait_for_leader()
    for i in sorted(gcs_ha.members):  # the leader and both followers (which forward)
        assert kv_get(gcs_ha.gcs_address(i), kind) == expected, i


def test_the_admin_client_follows_ray_use_tls(gcs_ha: ProcessCluster) -> None:
    leader = gcs_ha.wait_for_leader()
    with AdminClient(gcs_ha.gcs_address(leader), 5.0) as client:
        assert client.status().role == "leader"


def test_tls_without_certificates_refuses_to_start(tmp_path: Path) -> None:
    env = {USE_TLS_ENV: "1", CERT_ENV: "", KEY_ENV: "", CA_ENV: ""}
    with ProcessCluster(1, tmp_path, GCS_PORT + 50, RAFT_PORT + 50, replica_env=lambda i: env) as c:
        c.start()
        process = c.process(0)
        assert process is not None
        assert process.wait(60) == 2
    log = c.log_path(0).read_text()
    assert f"{USE_TLS_ENV} is on but {CERT_ENV}, {KEY_ENV}, {CA_ENV} is not set" in log
