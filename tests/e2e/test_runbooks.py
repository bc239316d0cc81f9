"""Runbooks of docs/operations.md, performed as written (the others have tests of their
own: backup and restore, lost quorum, a full disk, a failing disk, a power loss).

- "the GCS store is full": restart the replicas one by one with a larger `--map-size`,
  and writes are accepted again.
- "the snapshot is damaged": the replica refuses to start and says to remove its raft/
  (keeping lmdb/); done, it starts and catches up from the others.

Ports: gRPC 127.0.0.1:13700-13702, Raft 13710-13712.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import pytest

from gcs_ha.errors import GcsHaError
from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

VALUE = os.urandom(256 * 1024)


def put(cluster: ProcessCluster, n: int) -> tuple[grpc.StatusCode, str]:
    """Put key n through the serving leader: (gRPC code, details)."""
    address = cluster.gcs_address(cluster.wait_for_leader(30))
    return kv_calls.put(address, b"rb", b"k%d" % n, VALUE)


def agree(cluster: ProcessCluster) -> bool:
    try:
        return len({cluster.digest(i) for i in range(3)}) == 1
    except GcsHaError:
        return False


def test_a_full_map_is_raised_by_a_rolling_restart(tmp_path: Path) -> None:
    args = ("--map-size", "16MiB")
    with ProcessCluster(3, tmp_path, 13700, 13710, extra_args=args) as cluster:
        cluster.start()
        n = 0
        while (outcome := put(cluster, n))[0] is grpc.StatusCode.OK:
            n += 1
            assert n < 100, "never refused"
        code, details = outcome
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "raise --map-size" in details

        cluster.extra_args = ("--map-size", "64MiB")
        for i in range(3):  # one by one: a majority serves all along
            cluster.stop(i)
            cluster.start(i)
            wait_until(lambda: agree(cluster), 60, f"r{i} did not catch up")
        assert put(cluster, n) == (grpc.StatusCode.OK, "")


def test_a_damaged_snapshot_is_resynced_from_the_others(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, 13700, 13710) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(30)
        victim = next(i for i in range(3) if i != leader)
        for n in range(20):
            assert put(cluster, n)[0] is grpc.StatusCode.OK
        snapshot = cluster.data_dir(victim) / "raft" / "snapshot"
        with cluster.admin(victim) as admin:  # Compact answers after 2 s even when pysyncobj
            # has not started the snapshot yet (a loaded machine): ask until it is on disk
            wait_until(lambda: snapshot.exists() or (admin.compact() and None), 60, "no snapshot")
        cluster.stop(victim)
        with open(snapshot, "r+b") as f:
            f.truncate(10)  # damaged: not even its header can be read

        cluster.start(victim)
        proc = cluster.process(victim)
        assert proc is not None
        assert wait_until(proc.poll, 30, "it started on a damaged snapshot") != 0
        log = cluster.log_path(victim).read_text()
        assert "remove" in log and "(keep lmdb/)" in log

        shutil.rmtree(cluster.data_dir(victim) / "raft")  # the runbook
        cluster.start(victim)
        assert put(cluster, 99)[0] is grpc.StatusCode.OK
        wait_until(lambda: agree(cluster), 60, "it did not catch up")
