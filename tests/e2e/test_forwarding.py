"""Every replica answers Ray's calls (real `gcs-ha start` processes): the leader itself, a
follower by forwarding; the cluster id; and a leader killed with SIGKILL under load."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.cluster_id import WRONG_CLUSTER_ID
from gcs_ha.server.forwarding import FORWARDED_BY_KEY
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

GCS_PORT, RAFT_PORT = 10200, 10300  # the kill drill uses +20
NOT_FOUND, INVALID_ARGUMENT = 17, 34
SERVING = health_pb2.HealthCheckResponse.SERVING


def ready(cluster: ProcessCluster) -> int:
    """Wait for a serving leader whose every replica is registered; returns the leader."""
    cluster.wait_for_leader(timeout=60)
    for i in sorted(cluster.members):
        cluster.wait_for_members(len(cluster.members), i)
    return wait_until(lambda: serving_replica(cluster), 30, "no replica's health says SERVING")


def serving_replica(cluster: ProcessCluster) -> int | None:
    for i in cluster.running():
        try:
            if health(cluster.gcs_address(i), "") == SERVING:
                return i
        except grpc.RpcError:
            pass
    return None


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return stub.Check(request, timeout=3).status  # type: ignore[no-any-return]


def kv(address: str) -> pb_grpc.InternalKVGcsServiceStub:
    return pb_grpc.InternalKVGcsServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]


def node_info(address: str) -> pb_grpc.NodeInfoGcsServiceStub:
    return pb_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]


def cluster_id(address: str) -> bytes:
    """GetClusterId, retried while the replica answers UNAVAILABLE (it may not know yet)."""

    def probe() -> bytes | None:
        try:
            reply = node_info(address).GetClusterId(pb.GetClusterIdRequest(), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            return None
        assert reply.status.code == 0
        return bytes(reply.cluster_id)

    return wait_until(probe, 30, f"{address} does not answer GetClusterId")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, int]]:
    with ProcessCluster(3, tmp_path_factory.mktemp("fwd"), GCS_PORT, RAFT_PORT) as c:
        c.start()
        yield c, ready(c)


def followers(cluster: ProcessCluster, leader: int) -> list[int]:
    return [i for i in sorted(cluster.members) if i != leader]


@pytest.mark.slow
def test_kv_through_every_replica(cluster: tuple[ProcessCluster, int]) -> None:
    c, leader = cluster
    for i in followers(c, leader):
        put = pb.InternalKVPutRequest(namespace=b"fwd", key=b"via-%d" % i, value=b"%d" % i)
        reply = kv(c.gcs_address(i)).InternalKVPut(put, timeout=10)
        assert (reply.status.code, reply.added) == (0, True)
    for i in range(3):
        for j in followers(c, leader):
            get = pb.InternalKVGetRequest(namespace=b"fwd", key=b"via-%d" % j)
            assert kv(c.gcs_address(i)).InternalKVGet(get, timeout=10).value == b"%d" % j


@pytest.mark.slow
def test_forwarded_errors_keep_their_ray_status(cluster: tuple[ProcessCluster, int]) -> None:
    c, leader = cluster
    stub = kv(c.gcs_address(followers(c, leader)[0]))
    missing = stub.InternalKVGet(pb.InternalKVGetRequest(namespace=b"fwd", key=b"no"), timeout=10)
    assert (missing.status.code, missing.status.message) == (NOT_FOUND, "Failed to find the key")
    empty = stub.InternalKVPut(pb.InternalKVPutRequest(key=b"", value=b"x"), timeout=10)
    assert empty.status.code == INVALID_ARGUMENT


@pytest.mark.slow
def test_cluster_id_is_one_and_checked(cluster: tuple[ProcessCluster, int]) -> None:
    c, leader = cluster
    ids = {cluster_id(c.gcs_address(i)) for i in range(3)}
    assert len(ids) == 1
    (the_id,) = ids
    assert len(the_id) == 28
    stored = kv(c.gcs_address(leader)).InternalKVGet(
        pb.InternalKVGetRequest(namespace=b"cluster", key=b"ray_cluster_id"), timeout=10
    )
    assert stored.value == the_id
    get = pb.InternalKVGetRequest(namespace=b"fwd", key=b"no")
    for i in range(3):
        stub = kv(c.gcs_address(i))
        with pytest.raises(grpc.RpcError) as info:
            stub.InternalKVGet(get, metadata=(("ray_cluster_id", "ab" * 28),), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == WRONG_CLUSTER_ID
        right = (("ray_cluster_id", the_id.hex()),)
        assert stub.InternalKVGet(get, metadata=right, timeout=10).status.code == NOT_FOUND
        assert stub.InternalKVGet(get, timeout=10).status.code == NOT_FOUND


@pytest.mark.slow
def test_owned_keys_and_health(cluster: tuple[ProcessCluster, int]) -> None:
    c, leader = cluster
    stub = kv(c.gcs_address(followers(c, leader)[0]))
    flag = pb.InternalKVGetRequest(namespace=b"__autoscaler", key=b"__autoscaler_v2_enabled")
    assert stub.InternalKVGet(flag, timeout=10).value == b"0"
    process = c.process(leader)
    assert process is not None
    pid = str(process.pid).encode()
    get_pid = pb.InternalKVGetRequest(namespace=b"", key=b"gcs_pid")
    # Written just after the leader started serving (nothing waits for it).
    wait_until(lambda: stub.InternalKVGet(get_pid, timeout=10).value == pid or None, 10, "pid")
    for i in range(3):
        assert (health(c.gcs_address(i), "") == SERVING) == (i == leader)
        assert health(c.gcs_address(i), "gcs-ha.forwarding") == SERVING


@pytest.mark.slow
def test_a_forwarded_call_is_never_forwarded_again(cluster: tuple[ProcessCluster, int]) -> None:
    c, leader = cluster
    get = pb.InternalKVGetRequest(namespace=b"fwd", key=b"no")
    with pytest.raises(grpc.RpcError) as info:
        kv(c.gcs_address(followers(c, leader)[0])).InternalKVGet(
            get, metadata=((FORWARDED_BY_KEY, "elsewhere"),), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # The same marker on the leader is fine: that is where forwarded calls go.
    reply = kv(c.gcs_address(leader)).InternalKVGet(
        get, metadata=((FORWARDED_BY_KEY, "elsewhere"),), timeout=10
    )
    assert reply.status.code == NOT_FOUND


# Ray's own generated stubs and Ray's C++ GcsClient, in a subprocess (never import ray
# into a process that imported gcs_ha.proto.ray: the protobuf symbols would clash).
RAY_CLIENT = """
import json, sys
import grpc
from ray.core.generated import gcs_service_pb2 as pb, gcs_service_pb2_grpc as pb_grpc
from ray._raylet import GcsClient
channel = grpc.insecure_channel(sys.argv[1])
cid = pb_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(pb.GetClusterIdRequest(), timeout=30)
meta = (("ray_cluster_id", cid.cluster_id.hex()),)
kv = pb_grpc.InternalKVGcsServiceStub(channel)
put = kv.InternalKVPut(pb.InternalKVPutRequest(namespace=b"ray", key=sys.argv[2].encode(),
                       value=b"v", overwrite=True), metadata=meta, timeout=30)
miss = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=b"ray", key=b"none"), metadata=meta,
                        timeout=30)
client = GcsClient(address=sys.argv[1])
client.internal_kv_put(b"c-" + sys.argv[2].encode(), b"cv", True, b"ray")
print(json.dumps({
    "cluster_id": cid.cluster_id.hex(), "added": put.added, "missing": miss.status.code,
    "client_cluster_id": client.cluster_id.hex(),
    "client_get": client.internal_kv_get(b"c-" + sys.argv[2].encode(), b"ray").decode(),
}))
"""


def ray_client(address: str, key: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", RAY_CLIENT, address, key],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_rays_clients_through_a_follower(cluster: tuple[ProcessCluster, int]) -> None:
    c, leader = cluster
    follower = followers(c, leader)[0]
    result = ray_client(c.gcs_address(follower), "k1")
    the_id = cluster_id(c.gcs_address(leader)).hex()
    assert result == {
        "cluster_id": the_id, "added": True, "missing": NOT_FOUND,
        "client_cluster_id": the_id, "client_get": "cv",
    }  # fmt: skip


class Writer(threading.Thread):
    """Puts unique keys through one replica as fast as it answers; records every outcome."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.stub = kv(address)
        self.stop = threading.Event()
        self.log: list[tuple[float, float, str, bytes]] = []  # (sent, done, outcome, key)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key = b"w%d" % n
            sent = time.monotonic()
            try:
                put = pb.InternalKVPutRequest(namespace=b"drill", key=key, value=key)
                self.stub.InternalKVPut(put, timeout=10)
                self.log.append((sent, time.monotonic(), "OK", key))
            except grpc.RpcError as exc:
                code = exc.code().name
                self.log.append((sent, time.monotonic(), code, key))
                time.sleep(0.01)


# Ray's C++ GcsClient writing through one address for a while (monotonic clock, which
# is shared by every process of the machine); prints "started", then its log as JSON.
RAY_LOOP = """
import json, sys, time
from ray._raylet import GcsClient
client = GcsClient(address=sys.argv[1])
print("started", flush=True)
end, log, n = time.monotonic() + float(sys.argv[2]), [], 0
while time.monotonic() < end:
    n += 1
    sent = time.monotonic()
    try:
        client.internal_kv_put(b"r%d" % n, b"v", True, b"rayloop", timeout=30)
        log.append((sent, time.monotonic(), "OK"))
    except Exception as exc:
        log.append((sent, time.monotonic(), repr(exc)[:200]))
print(json.dumps({"cluster_id": client.cluster_id.hex(), "log": log}))
"""


@pytest.mark.slow
def test_leader_kill_through_a_surviving_follower(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, GCS_PORT + 20, RAFT_PORT + 20) as c:
        c.start()
        leader = ready(c)
        follower = followers(c, leader)[0]
        the_id = cluster_id(c.gcs_address(follower))
        address = c.gcs_address(follower)
        ray = subprocess.Popen(
            [sys.executable, "-c", RAY_LOOP, address, "6"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert ray.stdout is not None and ray.stdout.readline().strip() == "started"
            writer = Writer(address)
            writer.start()
            time.sleep(1.0)
            killed_at = time.monotonic()
            c.kill(leader)

            def written_after_kill() -> bool | None:
                return any(o == "OK" and s > killed_at for s, _, o, _ in writer.log) or None

            wait_until(written_after_kill, 30, "no write succeeded after the kill")
            time.sleep(0.5)
            writer.stop.set()
            writer.join()
            ray_out, _ = ray.communicate(timeout=120)
        finally:
            ray.kill()
            ray.wait()

        outcomes = {o for _, _, o, _ in writer.log}
        assert outcomes <= {"OK", "UNAVAILABLE"}, outcomes
        before = max(d for _, d, o, _ in writer.log if o == "OK" and d <= killed_at)
        after = min(d for _, d, o, _ in writer.log if o == "OK" and d > killed_at)
        print(f"outage through a follower: {after - before:.3f} s")  # measured, not asserted
        # Every acknowledged write is there, read through each survivor.
        acked = [k for _, _, o, k in writer.log if o == "OK"]
        for i in followers(c, leader):
            stub = kv(c.gcs_address(i))
            for key in (acked[0], acked[len(acked) // 2], acked[-1]):
                get = pb.InternalKVGetRequest(namespace=b"drill", key=key)
                assert stub.InternalKVGet(get, timeout=10).value == key
            assert cluster_id(c.gcs_address(i)) == the_id
        # Ray's own client, through the same follower, before, during and after.
        result = json.loads(ray_out.strip().splitlines()[-1])
        assert result["cluster_id"] == the_id.hex()
        assert [o for _, _, o in result["log"] if o != "OK"] == []
        assert any(done < killed_at for _, done, _ in result["log"])
        assert any(sent > killed_at + 0.5 for sent, _, _ in result["log"])
