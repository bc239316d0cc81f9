"""Real Ray 2.60 with token authentication and TLS on gcs-ha-3, through a leader kill.

The replicas, the head (`gcs-ha ray-head`), a worker node (`ray start`) and the drivers
all run with the same RAY_AUTH_MODE=token and RAY_AUTH_TOKEN, and with RAY_USE_TLS=1 and
one CA and certificate (gcs_ha.testing.tls_certs). Ray's raylets and core workers then
refuse calls without the token and without TLS, so every call gcs-ha makes to them
(leases, actor creation, bundle commits, health checks) must carry the token over TLS.
A first driver runs tasks, creates a detached actor and a placement group; the leader
is killed with kill -9; a second driver finds the actor by name, runs tasks and places
and removes a group. A driver with a wrong token gets nowhere, a TLS call without the
token is refused as Ray's GCS refuses it, and a plaintext one does not get through.

gcs-ha on 127.0.0.2:12600-12612, Ray's processes on 12700-12999.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.ray_auth import REJECTED
from gcs_ha.ray_tls import load_ray_tls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.ray_nodes import RayProcesses, last_json, port_options, ray_on_gcs_ha
from gcs_ha.testing.tls_certs import write_certs

HOST = "127.0.0.2"
GCS_PORT, RAFT_PORT = 12600, 12610
TOKEN = secrets.token_hex(16)
TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


def ray_ports(k: int) -> list[str]:
    """Port options of node k (0 = head): 10 ports and 100 worker ports each."""
    workers = 12800 + 100 * k
    return port_options(12700 + 10 * k, range(workers, workers + 100))


@dataclass
class Cluster:
    gcs: ProcessCluster
    leader: int
    f1: str  # the head and the second driver use this replica
    f2: str  # the worker node and the first driver use this one
    ray: RayProcesses


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("real-ray-secured")
    hosts = [HOST, "127.0.0.1", "localhost"]  # every Ray process runs on HOST
    # The replicas, Ray's processes and the harness's admin calls: all with TLS and token.
    env = {**TOKEN_ENV, **write_certs(base / "certs", hosts)}
    with ray_on_gcs_ha(
        base, GCS_PORT, RAFT_PORT, HOST, "ghsec-", env=env,
        failed=lambda: request.session.testsfailed > 0,
    ) as on:  # fmt: skip
        on.gcs.wait_for_members(3, on.leader, timeout=60)
        head_args = ["--num-cpus=1", "--include-dashboard=false", "--dashboard-port=12707"]
        head_args += [f"--node-ip-address={HOST}", "--ray-client-server-port=12708"]
        node = ["--num-cpus=2", '--resources={"worker": 2}', f"--node-ip-address={HOST}"]
        on.start_nodes([*head_args, *ray_ports(0)], [[*node, *ray_ports(1)]])
        yield Cluster(on.gcs, on.leader, *on.followers, on.ray)


BEFORE = """
import json, sys
import ray
from ray.util.placement_group import placement_group
ray.init(address=sys.argv[1], namespace="tok")

@ray.remote(resources={"worker": 1})
def square(i):
    return i * i

@ray.remote(num_cpus=0, resources={"worker": 0.1})
class Keeper:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

squares = ray.get([square.remote(i) for i in range(50)], timeout=120)
keeper = Keeper.options(name="keeper", lifetime="detached", max_restarts=-1).remote()
pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="tok-pg", lifetime="detached")
ready = pg.wait(timeout_seconds=60)
print(json.dumps({"squares_ok": squares == [i * i for i in range(50)],
                  "keeper": ray.get(keeper.incr.remote(), timeout=60), "pg_ready": ready}))
"""

AFTER = """
import json, sys
import ray
from ray.util.placement_group import placement_group, remove_placement_group
ray.init(address=sys.argv[1], namespace="tok")

@ray.remote(resources={"worker": 1})
def square(i):
    return i * i

keeper = ray.get_actor("keeper")
remove_placement_group(ray.util.get_placement_group("tok-pg"))  # it holds node1's 2 CPUs
squares = ray.get([square.remote(i) for i in range(50)], timeout=120)
pg = placement_group([{"CPU": 1}], strategy="SPREAD")
ready = pg.wait(timeout_seconds=60)
remove_placement_group(pg)
print(json.dumps({"squares_ok": squares == [i * i for i in range(50)],
                  "keeper": ray.get(keeper.incr.remote(), timeout=60), "pg_ready": ready}))
"""

WRONG_TOKEN = """
import sys
import ray
try:
    ray.init(address=sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, str(exc)[:300])
    sys.exit(3)
print("connected")
"""


def kv_get(
    address: str, metadata: tuple[tuple[str, str], ...], tls: bool = True
) -> tuple[str, str]:
    """(code name, details) of one InternalKVGet, over TLS or in plaintext."""
    creds = load_ray_tls(os.environ) if tls else None
    with (
        grpc.secure_channel(address, creds.channel_credentials())
        if creds
        else grpc.insecure_channel(address)
    ) as channel:
        stub = pb_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.InternalKVGet(
                pb.InternalKVGetRequest(namespace=b"n", key=b"k"), metadata=metadata, timeout=10
            )
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", ""


@pytest.mark.slow
def test_secured_ray_runs_and_survives_a_leader_kill(cluster: Cluster) -> None:
    before = last_json(cluster.ray.driver(BEFORE, cluster.f2), 300)
    assert before == {"squares_ok": True, "keeper": 1, "pg_ready": True}
    cluster.gcs.kill(cluster.leader)
    assert cluster.gcs.wait_for_leader(timeout=60) != cluster.leader
    after = last_json(cluster.ray.driver(AFTER, cluster.f1), 300)
    assert after == {"squares_ok": True, "keeper": 2, "pg_ready": True}


@pytest.mark.slow
def test_without_the_token_nothing_gets_in(cluster: Cluster) -> None:
    assert kv_get(cluster.f1, ()) == ("UNAUTHENTICATED", REJECTED)
    assert (
        kv_get(cluster.f1, (("authorization", f"Bearer {TOKEN}"),), tls=False)[0] == "UNAVAILABLE"
    )
    assert kv_get(cluster.f1, (("authorization", f"Bearer {TOKEN}"),))[0] == "OK"
    wrong = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN[::-1]}
    driver = cluster.ray.driver(WRONG_TOKEN, cluster.f2, env=wrong)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode != 0 and "connected" not in out, out
