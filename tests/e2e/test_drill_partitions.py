"""Network partitions on the Raft links of real replicas, through the drill's relay.

A secure 3-replica ProcessCluster whose replicas dial their Raft peers through the relay
(gcs_ha.drill.relay, GCS_HA_RAFT_DIAL). Writes go through Ray's InternalKV protocol.
- The leader cut off from both peers: the other two elect a leader that acknowledges
  writes; the old one stops serving (it steps down after the 0.6 s leader fallback) and
  acknowledges nothing sent to it; after heal it follows and every replica has the same
  tables. Writes it was sent while isolated were never applied anywhere.
- One follower cut off: the majority keeps serving; after heal the follower catches up.
- The isolated leader answers manager reads until it steps down, one election timeout
  after the cut (check-quorum), and none after; a KV read sent to it after the new leader
  acknowledged a newer value never returns the old one (ReadIndex: it cannot confirm its
  leadership any more).
Ports: gRPC 127.0.0.1:13100-13102 / 13150-13152 / 13300-13302, Raft 13110-13112 /
13160-13162 / 13310-13312, relay 13120-13128 / 13170-13178 / 13320-13328.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from gcs_ha.consensus._pysyncobj import RAFT_DIAL_ENV
from gcs_ha.consensus.config import RaftTiming
from gcs_ha.drill.relay import RaftLinkRelay
from gcs_ha.errors import GcsHaError
from gcs_ha.proto import admin_pb2
from gcs_ha.proto.ray import gcs_service_pb2 as gcs_pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as gcs_grpc
from gcs_ha.server.status import RAY_OK
from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.kvload import KvClient, Op, Outcome
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

NAMESPACE = b"partition"
START_S = 30.0  # a fresh cluster elects a leader (the shared machine can be slow)
ELECTION_S = 10.0  # a new leader after a cut: in practice under 2 s
STEP_DOWN_SLACK_S = 0.3  # a cut-off leader's last read after its fallback: ticks, the ROLE frame
SETTLE_S = 30.0


@contextlib.contextmanager
def relayed_cluster(tmp_path: Path, base: int) -> Iterator[tuple[ProcessCluster, RaftLinkRelay]]:
    """3 replicas, gRPC base+i, Raft base+10+i, their links through a relay at base+20."""
    raft = [f"127.0.0.1:{base + 10 + i}" for i in range(3)]
    with (
        RaftLinkRelay(raft, base_port=base + 20, log_path=tmp_path / "logs" / "relay.log") as relay,
        ProcessCluster(
            3,
            tmp_path,
            gcs_port=base,
            raft_port=base + 10,
            replica_env=lambda i: {RAFT_DIAL_ENV: relay.env_for(i)},
        ) as cluster,
    ):
        (tmp_path / "logs").mkdir(parents=True, exist_ok=True)
        relay.start()
        cluster.start()
        yield cluster, relay


def put_all(cluster: ProcessCluster, replicas: Sequence[int], keys: Sequence[bytes]) -> list[Op]:
    """Put each key (value = key) through the serving leader among `replicas`."""

    async def run() -> list[Op]:
        seeds = [cluster.gcs_address(i) for i in replicas]
        async with KvClient(seeds, NAMESPACE, call_timeout_s=5.0) as client:
            await client.leader(timeout=ELECTION_S)
            return [await client.put(key, key) for key in keys]

    return asyncio.run(run())


def put_directly(cluster: ProcessCluster, i: int, key: bytes, timeout_s: float) -> bool:
    """Put `key` on replica i itself (no leader discovery); True if it was acknowledged."""
    outcome = kv_calls.put(cluster.gcs_address(i), NAMESPACE, key, key, timeout_s=timeout_s)
    return outcome[0] is grpc.StatusCode.OK


def get_directly(cluster: ProcessCluster, i: int, key: bytes, timeout_s: float) -> bytes | None:
    """Get `key` from replica i itself; None when the call failed."""
    return kv_calls.get(cluster.gcs_address(i), NAMESPACE, key, timeout_s=timeout_s)


def read_all(cluster: ProcessCluster) -> dict[bytes, bytes]:
    async def run() -> dict[bytes, bytes]:
        seeds = [cluster.gcs_address(i) for i in range(3)]
        async with KvClient(seeds, NAMESPACE) as client:
            return await client.read_all(deadline_s=SETTLE_S)

    return asyncio.run(run())


def status_of(cluster: ProcessCluster, i: int) -> admin_pb2.ReplicaStatus | None:
    try:
        return cluster.status(i, timeout=1.0)
    except GcsHaError:
        return None


def wait_follows(cluster: ProcessCluster, i: int) -> admin_pb2.ReplicaStatus:
    """Wait until replica i follows a serving leader and has applied all it committed."""

    def follows() -> admin_pb2.ReplicaStatus | None:
        leader = cluster.wait_for_leader(SETTLE_S)
        mine, theirs = status_of(cluster, i), status_of(cluster, leader)
        if mine is None or theirs is None or mine.role != "follower":
            return None
        if mine.leader_node_id != theirs.node_id or mine.applied_index < theirs.commit_index:
            return None
        return mine

    return wait_until(follows, SETTLE_S, f"r{i} does not follow the leader")


def digests_agree(cluster: ProcessCluster) -> set[tuple[int, str]]:
    """Wait until every replica is at one applied index; returns the digests seen there."""

    def same_index() -> set[tuple[int, str]] | None:
        digests = {cluster.digest(i) for i in range(3)}
        return digests if len({index for index, _ in digests}) == 1 else None

    return wait_until(same_index, SETTLE_S, "the replicas never reached one applied index")


def acked(ops: Sequence[Op]) -> bool:
    return all(op.outcome is Outcome.OK for op in ops)


def test_isolated_leader_is_replaced_and_rejoins(tmp_path: Path) -> None:
    with relayed_cluster(tmp_path, 13100) as (cluster, relay):
        old = cluster.wait_for_leader(START_S)
        others = [i for i in range(3) if i != old]
        assert acked(put_all(cluster, range(3), [b"before"]))
        assert relay.status().forwarded_bytes > 0  # the links do go through the relay
        old_term = cluster.status(old).term

        relay.isolate(old)
        # Sent while it may still believe it leads: it cannot commit, so never acknowledges.
        assert not put_directly(cluster, old, b"to-isolated-leader", timeout_s=3.0)
        new = cluster.wait_for_leader(ELECTION_S, exclude=[old])
        assert cluster.status(new).term > old_term
        assert acked(put_all(cluster, others, [b"during-1", b"during-2"]))

        def stepped_down() -> admin_pb2.ReplicaStatus | None:
            status = status_of(cluster, old)
            return status if status and not status.serving and status.role != "leader" else None

        wait_until(stepped_down, ELECTION_S, f"isolated r{old} still leads")
        assert not put_directly(cluster, old, b"to-isolated-follower", timeout_s=1.0)

        relay.heal()
        wait_follows(cluster, old)
        assert acked(put_all(cluster, range(3), [b"after"]))
        wait_follows(cluster, old)
        assert len(digests_agree(cluster)) == 1
        stored = read_all(cluster)
        assert {b"before", b"during-1", b"during-2", b"after"} <= stored.keys()
        assert b"to-isolated-leader" not in stored
        assert b"to-isolated-follower" not in stored


def test_cut_off_follower_does_not_stop_the_majority(tmp_path: Path) -> None:
    with relayed_cluster(tmp_path, 13150) as (cluster, relay):
        leader = cluster.wait_for_leader(START_S)
        follower, third = (i for i in range(3) if i != leader)
        assert acked(put_all(cluster, range(3), [b"before"]))

        relay.cut([(follower, leader), (follower, third)])
        expected = sorted((min(follower, i), max(follower, i)) for i in (leader, third))
        assert relay.status().cut == tuple(expected)
        assert acked(put_all(cluster, [leader, third], [b"during-%d" % n for n in range(20)]))
        status = status_of(cluster, follower)
        assert status is not None and not status.serving

        def leader_ahead() -> admin_pb2.ReplicaStatus | None:
            # Statuses are snapshots a Raft tick or two old: wait for the leader's to show
            # the writes; the cut-off follower's applied index must stay behind it.
            mine, theirs = status_of(cluster, follower), status_of(cluster, leader)
            if mine is None or theirs is None or not theirs.serving:
                return None
            return theirs if mine.applied_index < theirs.commit_index else None

        wait_until(leader_ahead, SETTLE_S, f"cut-off r{follower} kept up with the leader")

        relay.heal()
        wait_follows(cluster, follower)
        assert acked(put_all(cluster, range(3), [b"after"]))
        wait_follows(cluster, follower)
        assert len(digests_agree(cluster)) == 1
        stored = read_all(cluster)
        assert {b"before", b"after", *(b"during-%d" % n for n in range(20))} <= stored.keys()


def node_reads_answered(cluster: ProcessCluster, i: int, seconds: float) -> list[float]:
    """Ask replica i itself for the node table (a manager read, answered from memory)
    again and again for `seconds`; the times, from the start, of the answers it gave."""
    answered = []
    start = time.monotonic()
    with grpc.insecure_channel(cluster.gcs_address(i)) as channel:
        stub = gcs_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        while time.monotonic() - start < seconds:
            try:
                reply = stub.GetAllNodeInfo(gcs_pb.GetAllNodeInfoRequest(), timeout=0.2)
            except grpc.RpcError:
                continue
            if reply.status.code == RAY_OK:
                answered.append(time.monotonic() - start)
    return answered


def test_isolated_leader_stops_answering_within_one_election_timeout(tmp_path: Path) -> None:
    """Check-quorum: cut off, the old leader answers manager reads from memory until it
    steps down, one election timeout (`leader_fallback_s`) after the cut, and none later
    (with the old 1.5 s fallback it answered for 1.5 s). A KV read sent to it after the
    new leader acknowledged a newer value never returns the old one (ReadIndex)."""
    with relayed_cluster(tmp_path, 13300) as (cluster, relay):
        old = cluster.wait_for_leader(START_S)
        others = [i for i in range(3) if i != old]
        assert acked(put_all(cluster, range(3), [b"k"]))  # value b"k"
        assert node_reads_answered(cluster, old, 0.3), "the leader answers no read"

        relay.isolate(old)
        answered = node_reads_answered(cluster, old, 2.5)
        bound = RaftTiming().leader_fallback_s + STEP_DOWN_SLACK_S
        assert answered, "no read answered right after the cut"
        assert max(answered) <= bound, f"answered {max(answered):.2f} s after the cut"
        cluster.wait_for_leader(ELECTION_S, exclude=[old])

        async def overwrite() -> Op:
            seeds = [cluster.gcs_address(i) for i in others]
            async with KvClient(seeds, NAMESPACE, call_timeout_s=5.0) as client:
                await client.leader(timeout=ELECTION_S)
                return await client.put(b"k", b"newer")

        assert asyncio.run(overwrite()).outcome is Outcome.OK
        # Whatever the old leader answers now, it is not the value the new leader replaced.
        assert get_directly(cluster, old, b"k", timeout_s=10.0) in (None, b"newer")
        relay.heal()
        wait_follows(cluster, old)
        assert get_directly(cluster, old, b"k", timeout_s=10.0) == b"newer"
