"""Lost quorum, recovered: two of three replicas destroyed for good, `gcs-ha recover` turns
the survivor (the old leader, which has every write it acknowledged) into a cluster of
one (its LMDB lost to a power loss too, so rebuilt from its journal), which serves those
writes and new ones when started with its old command (its `--peer` flags name the
dead), and which two new replicas then join.
Ports: gRPC 127.0.0.1:18100-18104, Raft 18110-18114.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.powerloss import lose_unsynced_lmdb

pytestmark = pytest.mark.slow

NAMESPACE = b"quorum"


def put(address: str, key: bytes) -> None:
    """Put key = key, sent again after UNAVAILABLE (an election under load)."""
    assert kv_calls.put(address, NAMESPACE, key, key, retry_s=30) == (grpc.StatusCode.OK, "")


def recover(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gcs_ha.cli", "recover", "--data-dir", str(data_dir)]
    return subprocess.run(
        [*command, *flags], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_survivor_becomes_a_cluster_of_one_that_others_join(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, 18100, 18110) as cluster:
        cluster.start()
        for i in range(3):  # a cluster that has run: every replica registered itself
            cluster.wait_for_members(3, i)
        address = cluster.gcs_address(cluster.wait_for_leader(30))
        keys = [b"k%d" % n for n in range(200)]
        for key in keys:
            put(address, key)
        survivor = cluster.wait_for_leader(30)  # the leader now has every write it acked
        for i in range(3):
            cluster.kill(i)
            if i != survivor:
                shutil.rmtree(cluster.data_dir(i))  # gone for good

        # And its machine lost power: LMDB must be rebuilt and the journal replayed.
        assert lose_unsynced_lmdb(cluster.data_dir(survivor) / "lmdb")
        asked = recover(cluster.data_dir(survivor))
        assert asked.returncode == 2 and "--yes" in asked.stderr
        # (its consensus process may take a moment to die after the kill: the lock says so)
        done = wait_until(
            lambda: (
                yes
                if (yes := recover(cluster.data_dir(survivor), "--yes")).returncode == 0
                or "in use" not in yes.stderr
                else None
            ),
            10,
            "the data dir stayed locked",
        )
        assert done.returncode == 0, done.stderr
        assert "is now the only member" in done.stdout
        replayed = int(done.stdout.split(" journal entries replayed")[0].rsplit(" ", 1)[1])
        assert replayed >= len(keys)

        cluster.start(survivor)  # the same command, --peer naming the dead replicas
        assert cluster.wait_for_leader(30) == survivor
        address = cluster.gcs_address(survivor)
        for key in keys:
            assert kv_calls.get(address, NAMESPACE, key) == key
        put(address, b"after")

        cluster.members = {survivor}
        joined = [cluster.join_replica(via=survivor) for _ in range(2)]
        cluster.wait_for_members(3, survivor, timeout=60)
        put(address, b"with-three")

        def agree() -> bool:
            return len({cluster.digest(i) for i in (survivor, *joined)}) == 1

        wait_until(agree, 60, "the new members never caught up")
