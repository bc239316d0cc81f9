"""Malformed, unknown, oversized and replayed requests on real replicas: the right status,
no crash, no change to the tables."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.testing.cluster import ProcessCluster

GCS_PORT, RAFT_PORT = 28300, 28400

# Every Ray service the GCS serves, with one unary method of each.
METHODS = [
    "/ray.rpc.NodeInfoGcsService/RegisterNode",
    "/ray.rpc.JobInfoGcsService/AddJob",
    "/ray.rpc.WorkerInfoGcsService/AddWorkerInfo",
    "/ray.rpc.InternalKVGcsService/InternalKVPut",
    "/ray.rpc.NodeResourceInfoGcsService/GetAllResourceUsage",
    "/ray.rpc.TaskInfoGcsService/AddTaskEventData",
    "/ray.rpc.ControlPlanePubSubGcsService/GcsSubscriberCommandBatch",
    "/ray.rpc.RuntimeEnvGcsService/PinRuntimeEnvURI",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(3, tmp_path_factory.mktemp("bad"), GCS_PORT, RAFT_PORT) as c:
        c.start()
        leader = c.wait_for_leader(timeout=60)
        for i in range(3):
            c.wait_for_members(3, i)
        assert leader >= 0
        yield c


def _digests(cluster: ProcessCluster) -> set[str]:
    return {cluster.digest(i)[1] for i in range(3)}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_garbage_bytes_change_nothing(cluster: ProcessCluster, method: str) -> None:
    """Bytes that are not the request message: gRPC refuses to parse them (naming the
    type); every replica lives on and no table changes. Sent to a follower too (forwarded)."""
    before = _digests(cluster)
    for i in range(3):
        channel = grpc.insecure_channel(cluster.gcs_address(i))
        call = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as info:
            call(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        code = info.value.code()  # type: ignore[attr-defined]
        assert code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), code
    assert all(cluster.is_running(i) for i in range(3))
    assert _digests(cluster) == before


@pytest.mark.slow
def test_unknown_method_is_unimplemented(cluster: ProcessCluster) -> None:
    for i in range(3):
        channel = grpc.insecure_channel(cluster.gcs_address(i))
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/NoSuchMethod")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


@pytest.mark.slow
def test_oversized_message_is_refused(cluster: ProcessCluster) -> None:
    leader = cluster.wait_for_leader(timeout=30)
    stub = pb_grpc.InternalKVGcsServiceStub(  # type: ignore[no-untyped-call]
        grpc.insecure_channel(
            cluster.gcs_address(leader), options=[("grpc.max_send_message_length", -1)]
        )
    )
    huge = pb.InternalKVPutRequest(namespace=b"n", key=b"k", value=b"x" * (80 << 20))
    with pytest.raises(grpc.RpcError) as info:
        stub.InternalKVPut(huge, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert cluster.is_running(leader)


@pytest.mark.slow
def test_replayed_add_job_is_harmless(cluster: ProcessCluster) -> None:
    """Ray replays requests after UNAVAILABLE: the same AddJob twice (through two replicas)
    leaves one job, and the tables end identical everywhere."""
    leader = cluster.wait_for_leader(timeout=30)
    follower = next(i for i in range(3) if i != leader)
    job = gcs_pb2.JobTableData(job_id=b"\x07\x00\x00\x00", driver_pid=42)
    for i in (leader, follower):
        stub = pb_grpc.JobInfoGcsServiceStub(grpc.insecure_channel(cluster.gcs_address(i)))  # type: ignore[no-untyped-call]
        reply = stub.AddJob(pb.AddJobRequest(data=job), timeout=10)
        assert reply.status.code == 0
    stub = pb_grpc.JobInfoGcsServiceStub(grpc.insecure_channel(cluster.gcs_address(leader)))  # type: ignore[no-untyped-call]
    jobs = stub.GetAllJobInfo(pb.GetAllJobInfoRequest(), timeout=10).job_info_list
    assert [j.job_id for j in jobs].count(job.job_id) == 1
