"""A leader whose disk fails stops: its journal's fsync fails with EIO (injected with
GCS_HA_UNSAFE_FAIL_FSYNC_FILE, on that replica only, at a chosen moment), the replica
exits with code 70 instead of going on leading with a page cache it can no longer trust,
another replica leads and acknowledges writes, and nothing acknowledged is lost.
Ports: gRPC 127.0.0.1:13850-13852, Raft 13860-13862.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from gcs_ha.consensus.journal import UNSAFE_FAIL_FSYNC_FILE_ENV
from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

NAMESPACE = b"failstop"


def put(address: str, key: bytes) -> bool:
    return kv_calls.put(address, NAMESPACE, key, key, timeout_s=10)[0] is grpc.StatusCode.OK


def get(address: str, key: bytes) -> bytes | None:
    return kv_calls.get(address, NAMESPACE, key)


def test_a_leader_whose_fsync_fails_exits_70_and_another_leads(tmp_path: Path) -> None:
    trigger = {i: tmp_path / f"fail-fsync-r{i}" for i in range(3)}
    env = {i: {UNSAFE_FAIL_FSYNC_FILE_ENV: str(trigger[i])} for i in range(3)}
    with ProcessCluster(3, tmp_path, 13850, 13860, replica_env=env.__getitem__) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(30)
        acked = [
            key for key in (b"a%d" % n for n in range(20)) if put(cluster.gcs_address(leader), key)
        ]
        assert len(acked) == 20

        trigger[leader].touch()  # its disk fails now
        assert not put(cluster.gcs_address(leader), b"after")  # never acknowledged by it
        proc = cluster.process(leader)
        assert proc is not None
        assert wait_until(proc.poll, 30, "the leader kept running") == 70
        log = cluster.log_path(leader).read_text()
        assert "FATAL: the Raft journal failed" in log

        new = cluster.wait_for_leader(30, exclude=[leader])
        address = cluster.gcs_address(new)
        assert put(address, b"b0")
        assert [get(address, key) for key in acked] == acked
