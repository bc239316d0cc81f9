"""Ray's InternalKVGcsService on real replica processes, through our stubs and Ray's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.storage.large_values import CHUNK_BYTES, MAX_KV_VALUE_BYTES
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

GCS_PORT, RAFT_PORT = 28100, 28200
NOT_FOUND, INVALID_ARGUMENT = 17, 34


@pytest.fixture(scope="module")
def leader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, int]]:
    with ProcessCluster(3, tmp_path_factory.mktemp("kv"), GCS_PORT, RAFT_PORT) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(timeout=60)
        for i in range(3):  # every replica registered itself: no more writes of its own
            cluster.wait_for_members(3, i)
        yield cluster, leader


def stub(cluster: ProcessCluster, i: int) -> pb_grpc.InternalKVGcsServiceStub:
    limit = [("grpc.max_receive_message_length", 1 << 30)]  # as Ray's clients: 512 MiB
    channel = grpc.insecure_channel(cluster.gcs_address(i), options=limit)
    return pb_grpc.InternalKVGcsServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.mark.slow
def test_kv_semantics(leader: tuple[ProcessCluster, int]) -> None:
    cluster, i = leader
    kv = stub(cluster, i)
    ns = b"test"
    put = kv.InternalKVPut(pb.InternalKVPutRequest(namespace=ns, key=b"a", value=b"1"))
    assert (put.status.code, put.added) == (0, True)
    again = kv.InternalKVPut(
        pb.InternalKVPutRequest(namespace=ns, key=b"a", value=b"2", overwrite=False)
    )
    assert (again.status.code, again.added) == (0, False)
    assert kv.InternalKVGet(pb.InternalKVGetRequest(namespace=ns, key=b"a")).value == b"1"
    missing = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=ns, key=b"nope"))
    assert (missing.status.code, missing.status.message) == (NOT_FOUND, "Failed to find the key")
    for key in (b"p/1", b"p/2", b"q"):
        kv.InternalKVPut(pb.InternalKVPutRequest(namespace=ns, key=key, value=key, overwrite=True))
    keys = kv.InternalKVKeys(pb.InternalKVKeysRequest(namespace=ns, prefix=b"p/"))
    assert list(keys.results) == [b"p/1", b"p/2"]
    multi = kv.InternalKVMultiGet(pb.InternalKVMultiGetRequest(namespace=ns, keys=[b"q", b"x"]))
    assert [(e.key, e.value) for e in multi.results] == [(b"q", b"q")]
    assert kv.InternalKVExists(pb.InternalKVExistsRequest(namespace=ns, key=b"q")).exists
    gone = kv.InternalKVDel(pb.InternalKVDelRequest(namespace=ns, key=b"p/", del_by_prefix=True))
    assert gone.deleted_num == 2
    assert kv.InternalKVDel(pb.InternalKVDelRequest(namespace=ns, key=b"q")).deleted_num == 1
    assert kv.InternalKVDel(pb.InternalKVDelRequest(namespace=ns, key=b"q")).deleted_num == 0


@pytest.mark.slow
def test_values_of_ray_size_through_leader_and_follower(
    leader: tuple[ProcessCluster, int],
) -> None:
    """Values beyond one chunk (Ray's runtime-env packages) are written in chunks and read
    whole, through the leader and forwarded by a follower; overwriting one with a small
    value leaves its chunks to the sweeper."""
    cluster, i = leader
    follower = next(j for j in range(3) if j != i)
    value = os.urandom(5 * CHUNK_BYTES + 12345)  # 20 MiB and a bit, incompressible
    for replica, key in ((i, b"via-leader"), (follower, b"via-follower")):
        kv = stub(cluster, replica)
        put = kv.InternalKVPut(
            pb.InternalKVPutRequest(namespace=b"big", key=key, value=value), timeout=120
        )
        assert (put.status.code, put.added) == (0, True)
        got = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=b"big", key=key), timeout=120)
        assert got.status.code == 0 and got.value == value
    kv = stub(cluster, follower)
    multi = kv.InternalKVMultiGet(
        pb.InternalKVMultiGetRequest(namespace=b"big", keys=[b"via-leader", b"none"]),
        timeout=120,
    )
    assert [(e.key, e.value == value) for e in multi.results] == [(b"via-leader", True)]
    kv.InternalKVPut(
        pb.InternalKVPutRequest(namespace=b"big", key=b"via-leader", value=b"s", overwrite=True)
    )
    small = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=b"big", key=b"via-leader"))
    assert small.value == b"s"
    assert (
        kv.InternalKVDel(
            pb.InternalKVDelRequest(namespace=b"big", key=b"via", del_by_prefix=True)
        ).deleted_num
        == 2
    )
    index, _ = cluster.digest(i)
    wait_until(lambda: all(cluster.digest(j)[0] >= index for j in range(3)) or None, 30, "catch-up")
    assert len({cluster.digest(j)[1] for j in range(3)}) == 1  # same chunks everywhere


@pytest.mark.slow
def test_bad_requests_get_ray_statuses_and_change_nothing(
    leader: tuple[ProcessCluster, int],
) -> None:
    cluster, i = leader
    kv = stub(cluster, i)
    before = cluster.digest(i)
    empty = kv.InternalKVPut(pb.InternalKVPutRequest(namespace=b"", key=b"", value=b"x"))
    assert empty.status.code == INVALID_ARGUMENT
    big = kv.InternalKVPut(
        pb.InternalKVPutRequest(namespace=b"n", key=b"k", value=b"x" * (MAX_KV_VALUE_BYTES + 1)),
        timeout=120,
    )
    assert big.status.code == INVALID_ARGUMENT
    assert "exceeds the limit of 536870912" in big.status.message
    # Garbage bytes instead of a request: INVALID_ARGUMENT naming the message type
    # (server/parse_guard.py); the replica lives on and nothing changed.
    channel = grpc.insecure_channel(cluster.gcs_address(i))
    raw = channel.unary_unary("/ray.rpc.InternalKVGcsService/InternalKVPut")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff\xff", timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert info.value.details().endswith("as ray.rpc.InternalKVPutRequest")  # type: ignore[attr-defined]
    assert cluster.digest(i) == before
    assert cluster.is_running(i)


@pytest.mark.slow
def test_follower_forwards_to_the_leader(leader: tuple[ProcessCluster, int]) -> None:
    cluster, i = leader
    follower = next(j for j in range(3) if j != i)
    kv = stub(cluster, follower)
    kv.InternalKVPut(pb.InternalKVPutRequest(namespace=b"fw", key=b"k", value=b"v"), timeout=10)
    got = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=b"fw", key=b"k"), timeout=10)
    assert (got.status.code, got.value) == (0, b"v")


RAY_CLIENT = """
import json, sys
import grpc
from ray.core.generated import gcs_service_pb2 as pb, gcs_service_pb2_grpc as pb_grpc
kv = pb_grpc.InternalKVGcsServiceStub(grpc.insecure_channel(sys.argv[1]))
put = kv.InternalKVPut(pb.InternalKVPutRequest(namespace=b"ray", key=b"k", value=b"v"))
get = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=b"ray", key=b"k"))
miss = kv.InternalKVGet(pb.InternalKVGetRequest(namespace=b"ray", key=b"none"))
print(json.dumps([put.added, get.value.decode(), miss.status.code]))
"""


@pytest.mark.slow
def test_rays_own_stubs_understand_us(leader: tuple[ProcessCluster, int]) -> None:
    cluster, i = leader
    out = subprocess.run(
        [sys.executable, "-c", RAY_CLIENT, cluster.gcs_address(i)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout) == [True, "v", NOT_FOUND]
