"""A full disk never wedges the cluster. Three replicas whose data dirs are small tmpfs
mounts:
- filled through Ray's InternalKV protocol: the leader refuses the write it has no room
  for with RESOURCE_EXHAUSTED before proposing it; reads and deletes keep working, and
  writes are accepted again once keys are deleted; no replica exits, the replicas agree;
- a follower's disk filled behind gcs-ha's back (another process): the journal write
  that then fails stops it with exit code 70, and the others go on; once space is back
  it starts again and catches up (no crash loop). (The leader's own disk cannot be made
  to fail that way: the guard refuses the puts, and deletes reuse LMDB's free pages; its
  failing fsync is in test_fail_stop.py.)

Needs root (it mounts tmpfs); skipped otherwise. Ports: gRPC 127.0.0.1:13800-13802, Raft
13810-13812.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gcs_ha.errors import GcsHaError
from gcs_ha.testing import kv_calls
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

DISK = "48m"  # each replica's tmpfs
VALUE = os.urandom(256 * 1024)
NAMESPACE = b"capacity"
ARGS = ("--disk-reserve", "8MiB", "--compaction-bytes", "4MiB")


@contextlib.contextmanager
def small_disks(dirs: list[Path]) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    mounted: list[Path] = []
    try:
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(d)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                pytest.skip(f"cannot mount tmpfs here: {done.stderr.strip()}")
            mounted.append(d)
        yield
    finally:
        for d in reversed(mounted):
            subprocess.run(["umount", "-l", str(d)], check=False)


def put(address: str, n: int) -> grpc.StatusCode:
    """Put key n: OK or the refusal's code (sent again after UNAVAILABLE: an election)."""
    return kv_calls.put(address, NAMESPACE, b"f%d" % n, VALUE, retry_s=30)[0]


def test_a_full_disk_refuses_writes_and_keeps_serving(tmp_path: Path) -> None:
    dirs = [tmp_path / f"r{i}" for i in range(3)]  # ProcessCluster's data dirs
    with small_disks(dirs), ProcessCluster(3, tmp_path, 13800, 13810, extra_args=ARGS) as cluster:
        assert [cluster.data_dir(i) for i in range(3)] == dirs
        cluster.start()
        leader = cluster.wait_for_leader(30)
        address = cluster.gcs_address(leader)
        stored = 0
        while (code := put(address, stored)) is grpc.StatusCode.OK:
            stored += 1
            assert stored < 400, "never refused"
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stored >= 10
        assert put(address, stored) is grpc.StatusCode.RESOURCE_EXHAUSTED  # still full

        assert kv_calls.get(address, NAMESPACE, b"f0") == VALUE
        for n in range(stored // 2):
            assert kv_calls.delete(address, NAMESPACE, b"f%d" % n) == 1
        wait_until(lambda: put(address, stored) is grpc.StatusCode.OK, 10, "writes never came back")

        assert all(cluster.is_running(i) for i in range(3)), "a replica exited"
        assert cluster.serving_leader() == leader

        def agree() -> bool:
            return len({cluster.digest(i) for i in range(3)}) == 1

        wait_until(agree, 30, "the replicas do not agree")


def fill_up(directory: Path) -> Path:
    """Write zeros into `directory` until its file system is full (another process's
    data); the file, to remove later."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (2**20, 4096):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


def agree(cluster: ProcessCluster) -> bool:
    """Whether every replica answers with one digest."""
    try:
        return len({cluster.digest(i) for i in range(3)}) == 1
    except GcsHaError:
        return False  # one is still starting


def exit_code(cluster: ProcessCluster, i: int, timeout: float = 30) -> int:
    proc = cluster.process(i)
    assert proc is not None
    return int(wait_until(proc.poll, timeout, f"r{i} did not stop"))


def test_a_follower_whose_disk_fills_stops_with_exit_70(tmp_path: Path) -> None:
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    with small_disks(dirs), ProcessCluster(3, tmp_path, 13800, 13810, extra_args=ARGS) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(30)
        follower = next(i for i in range(3) if i != leader)
        address = cluster.gcs_address(leader)
        assert put(address, 0) is grpc.StatusCode.OK

        filler = fill_up(dirs[follower])  # a follower's journal write fails: it stops
        for n in range(1, 4):
            assert put(address, n) is grpc.StatusCode.OK  # the other two are a majority
        assert exit_code(cluster, follower) == 70
        filler.unlink()
        cluster.start(follower)  # space is back: it starts and catches up
        wait_until(lambda: agree(cluster), 30, "no catch-up")
