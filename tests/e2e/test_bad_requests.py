"""Malformed, unknown, oversized and replayed requests on real replicas, and admin calls
without the cluster secret: the right status, no crash, no change to the tables."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from gcs_ha.admin_auth import AUTH_KEY, admin_key, credential
from gcs_ha.admin_client import AdminClient
from gcs_ha.errors import AdminAuthError
from gcs_ha.proto import admin_pb2, admin_pb2_grpc
from gcs_ha.proto.ray import gcs_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as pb_grpc
from gcs_ha.server.forwarding import MAX_MESSAGE_BYTES
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

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
    """The replicas' table digests, once they applied the same index."""

    def settled() -> set[str] | None:
        found = [cluster.digest(i) for i in range(3)]
        return {d for _, d in found} if len({a for a, _ in found}) == 1 else None

    return wait_until(settled, 30, "the replicas did not settle on one applied index")


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_garbage_bytes_change_nothing(cluster: ProcessCluster, method: str) -> None:
    """Bytes that are not the request message: INVALID_ARGUMENT "unable to parse the
    request" (server/parse_guard.py; Ray's GCS says INTERNAL); every replica lives on and
    no table changes. Sent to a follower too (forwarded)."""
    before = _digests(cluster)
    for i in range(3):
        channel = grpc.insecure_channel(cluster.gcs_address(i))
        call = channel.unary_unary(method)
        with pytest.raises(grpc.RpcError) as info:
            call(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert info.value.details().startswith("unable to parse the request as ray.rpc.")  # type: ignore[attr-defined]
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
    # Over what a replica reads (Ray's 512 MiB message limit and a margin).
    huge = pb.InternalKVPutRequest(namespace=b"n", key=b"k", value=b"x" * (MAX_MESSAGE_BYTES + 1))
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


# -- the admin service: nothing without the cluster secret ------------------------------

ADMIN_CALLS = [
    ("Shutdown", admin_pb2.ShutdownRequest()),
    ("AddMember", admin_pb2.AddMemberRequest(member=admin_pb2.Member(
        node_id="intruder", raft_address="127.0.0.1:28499", gcs_address="127.0.0.1:28399"))),
    ("RemoveMember", admin_pb2.RemoveMemberRequest(node_id="r1")),
    ("TransferLeadership", admin_pb2.TransferLeadershipRequest()),
    ("Compact", admin_pb2.CompactRequest()),
    ("Digest", admin_pb2.DigestRequest()),
]  # fmt: skip


def _membership(cluster: ProcessCluster) -> list[list[tuple[str, str, str]]]:
    return [
        sorted((m.node_id, m.raft_address, m.gcs_address) for m in cluster.status(i).members)
        for i in range(3)
    ]


def _call_plain(
    address: str, method: str, request: object, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.StatusCode:
    stub = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, method)(request, timeout=10, metadata=metadata)
    code: grpc.StatusCode = info.value.code()  # type: ignore[attr-defined]
    return code


@pytest.mark.slow
def test_a_client_without_the_secret_can_neither_stop_nor_reshape_the_cluster(
    cluster: ProcessCluster,
) -> None:
    """Every admin call but Status, to every replica, with no credential, with one made
    from another secret, and with a good one replayed: UNAUTHENTICATED, and afterwards
    every replica runs, the membership, the leader and the tables are as they were."""
    leader = cluster.wait_for_leader(timeout=30)
    before = (_membership(cluster), _digests(cluster))
    other = admin_key(b"not-the-cluster-secret-at-all")
    for i in range(3):
        address = cluster.gcs_address(i)
        for method, request in ADMIN_CALLS:
            assert _call_plain(address, method, request) == grpc.StatusCode.UNAUTHENTICATED
            forged = ((AUTH_KEY, credential(other, method, request)),)
            assert _call_plain(address, method, request, forged) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
    # A good credential, replayed: the first use is spent, the replay refused.
    request = admin_pb2.DigestRequest()
    good = ((AUTH_KEY, credential(cluster.admin_key or b"", "Digest", request)),)
    stub = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(cluster.gcs_address(leader)))  # type: ignore[no-untyped-call]
    stub.Digest(request, timeout=10, metadata=good)
    assert _call_plain(cluster.gcs_address(leader), "Digest", request, good) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # Status stays readable; the rest is unchanged.
    assert all(cluster.is_running(i) for i in range(3))
    assert cluster.wait_for_leader(timeout=30) == leader
    assert (_membership(cluster), _digests(cluster)) == before


@pytest.mark.slow
def test_admin_errors_name_the_missing_secret(cluster: ProcessCluster) -> None:
    with AdminClient(cluster.gcs_address(0), 10.0) as client:
        with pytest.raises(AdminAuthError, match="needs the cluster secret"):
            client.compact()
        assert client.status().node_id == "r0"
