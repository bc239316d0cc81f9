"""Backup and restore as an operator runs them: `gcs-ha snapshot save` from a 3-replica
cluster under write load, every replica destroyed, `gcs-ha snapshot restore` into three
new data dirs of a new cluster (new name, new secret), which then serves every write
acknowledged before the backup began. Ports: gRPC 127.0.0.1:13900-13902, Raft
13910-13912 (the old cluster, then the new one).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from gcs_ha.proto.ray import gcs_service_pb2 as gcs_pb
from gcs_ha.proto.ray import gcs_service_pb2_grpc as gcs_grpc
from gcs_ha.secret import generate_secret_file
from gcs_ha.server.status import RAY_OK
from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

NAMESPACE = b"backup"


def gcs_ha(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gcs_ha.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Writer(threading.Thread):
    """Puts key n = value n, one after the other, recording when each was acknowledged."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.stub = gcs_grpc.InternalKVGcsServiceStub(grpc.insecure_channel(address))  # type: ignore[no-untyped-call]
        self.acked: list[tuple[bytes, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            key = b"w%d" % n
            request = gcs_pb.InternalKVPutRequest(namespace=NAMESPACE, key=key, value=key)
            reply = self.stub.InternalKVPut(request, timeout=10)
            if reply.status.code == RAY_OK:
                self.acked.append((key, time.monotonic()))
            n += 1


def get(address: str, key: bytes) -> bytes | None:
    return kv_calls.get(address, NAMESPACE, key)


def test_a_backup_under_load_seeds_a_new_cluster(tmp_path: Path) -> None:
    old_dir, new_dir, backup = tmp_path / "old", tmp_path / "new", tmp_path / "backup.gcsha"
    with ProcessCluster(3, old_dir, 13900, 13910, cluster_name="prod") as old:
        old.start()
        leader = old.wait_for_leader(30)
        unsigned = gcs_ha("snapshot", "save", str(backup), "--address", old.gcs_address(0))
        assert unsigned.returncode != 0 and "secret" in unsigned.stderr
        writer = Writer(old.gcs_address(leader))
        writer.start()
        wait_until(lambda: len(writer.acked) >= 50, 30, "no writes acknowledged")
        began = time.monotonic()
        assert old.secret_file is not None
        saved = gcs_ha(
            "snapshot", "save", str(backup), "--address", old.gcs_address(0),
            "--secret-file", str(old.secret_file),
        )  # fmt: skip
        assert saved.returncode == 0, saved.stderr
        time.sleep(0.3)  # writes after the backup: the new cluster may lack them
        writer.stop.set()
        writer.join(15)
        before = [key for key, at in writer.acked if at < began]
        assert "backup of cluster 'prod'" in saved.stdout
    shutil.rmtree(old_dir)  # every replica destroyed

    new_dir.mkdir()
    secret = new_dir / "cluster.secret"
    generate_secret_file(secret)
    for i in range(3):
        restored = gcs_ha(
            "snapshot", "restore", str(backup), "--data-dir", str(new_dir / f"r{i}"),
            "--node-id", f"r{i}", "--cluster-name", "prod-restored", "--secret-file", str(secret),
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
    with ProcessCluster(3, new_dir, 13900, 13910, cluster_name="prod-restored") as new:
        new.start()
        leader = new.wait_for_leader(30)
        address = new.gcs_address(leader)
        missing = [key for key in before if get(address, key) != key]
        assert missing == [], f"{len(missing)} of {len(before)} acknowledged writes lost"
        writer = Writer(address)
        writer.start()
        wait_until(lambda: len(writer.acked) >= 10, 30, "the new cluster takes no writes")
        writer.stop.set()
        writer.join(15)
        wait_until(lambda: len({new.digest(i) for i in range(3)}) == 1, 30, "replicas differ")
