"""A rolling upgrade of a live 3-replica cluster under a write load, as docs/operations.md
("Rolling upgrade") says: one replica at a time, stopped with SIGTERM (the leader hands
leadership to a caught-up follower first), started on the new build, `gcs-ha status`
healthy again before the next. The cluster version gate keeps the leader writing log
entry format 1 until every member has registered that it reads format 2.

The "new build" is this build with GCS_HA_UNSAFE_ENTRY_VERSION=2 (format 2 is format 1
under another number, gcs_ha/unsafe.py); the old build is this build without it. An
upgrade between two real builds: test_rolling_upgrade_between_two_builds (release suite:
the old build is main at OLD_COMMIT, exported from the repository's history).

Ports: gRPC 127.0.0.1:14000-14002, Raft 14010-14012 (two builds: +20).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pytest

from gcs_ha.cluster_ops import gather_status
from gcs_ha.cluster_view import HEALTHY, ClusterView
from gcs_ha.consensus import envelope
from gcs_ha.consensus.force_new_cluster import entry_data
from gcs_ha.consensus.journal import scan_log
from gcs_ha.errors import GcsHaError
from gcs_ha.storage.store_client import MEMBERS_TABLE
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.kvload import BackgroundLoad, KvClient, LoadConfig, Op, check_unique_writes
from gcs_ha.testing.polling import wait_until
from gcs_ha.unsafe import UNSAFE_ENTRY_VERSION_ENV

pytestmark = pytest.mark.slow

GCS_PORT, RAFT_PORT = 14000, 14010
NAMESPACE = b"rolling"
NEW_BUILD = {UNSAFE_ENTRY_VERSION_ENV: "2"}
STEP_ACKS = 40  # writes acknowledged after each step: the load goes on
LAG_SLACK = 50  # entries a replica may trail the leader's commit and count as caught up

# Ray's own C++ GcsClient writing through one replica until the file argv[2] exists
# (monotonic clock, shared by every process of the machine); prints "started", then its
# log as JSON.
RAY_LOOP = """
import json, os, sys, time
from ray._raylet import GcsClient
client = GcsClient(address=sys.argv[1])
print("started", flush=True)
log, n = [], 0
while not os.path.exists(sys.argv[2]):
    n += 1
    sent = time.monotonic()
    try:
        client.internal_kv_put(b"r%d" % n, b"v", True, b"rayloop", timeout=30)
        log.append((sent, time.monotonic(), "OK"))
    except Exception as exc:
        log.append((sent, time.monotonic(), repr(exc)[:200]))
    time.sleep(0.02)
print(json.dumps(log))
"""


class RayLoop:
    """RAY_LOOP in a subprocess, through one replica's address."""

    def __init__(self, address: str, stop_file: Path) -> None:
        self.stop_file = stop_file
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RAY_LOOP, address, str(stop_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "started"

    def finish(self) -> list[tuple[float, float, str]]:
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=120)
        log: list[tuple[float, float, str]] = json.loads(out.strip().splitlines()[-1])
        return log

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def settled(cluster: ProcessCluster, via: int) -> ClusterView:
    """What `gcs-ha status` shows once it exits 0 with every member caught up."""

    def probe() -> ClusterView | None:
        try:
            view = gather_status(cluster.gcs_address(via), timeout=1.0)
        except GcsHaError:
            return None
        caught_up = all(m.lag is not None and m.lag <= LAG_SLACK for m in view.members)
        return view if view.health() == HEALTHY and caught_up else None

    return wait_until(probe, 60, f"the cluster did not settle after r{via} started")


def registered_format(cluster: ProcessCluster, i: int) -> int | None:
    """The entry format replica i registered, as the serving leader knows it."""
    try:
        status = cluster.status(cluster.wait_for_leader(30), timeout=1.0)
    except GcsHaError:
        return None
    node = cluster.node_id(i)
    return next((m.entry_version or 1 for m in status.members if m.node_id == node), None)


def cluster_version(cluster: ProcessCluster) -> int:
    return cluster.status(cluster.wait_for_leader(30)).cluster_version


def logged_at(path: Path, text: str) -> datetime:
    """When the first line of a replica's log that contains `text` was written."""
    line = next(line for line in path.read_text().splitlines() if text in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def stop_leader(cluster: ProcessCluster, old: int) -> int:
    """SIGTERM the leader; returns the replica it handed leadership to. The new leader was
    elected in the next term before the old leader's consensus process stopped (a
    hand-off: after a plain stop the others elect only once it is gone, at least 10 ms
    later), the old leader logged the hand-off and exited 0."""
    term = cluster.status(old).term
    proc = cluster.process(old)
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    new = cluster.wait_for_leader(30)
    assert cluster.status(new).term == term + 1
    old_log = cluster.log_path(old)
    handed = f"handed leadership of term {term} to {cluster.node_id(new)} (leader of term "
    assert handed in old_log.read_text()
    elected = logged_at(cluster.log_path(new), f"elected leader of term {term + 1}")
    assert elected <= logged_at(old_log, "consensus stopped")
    return new


def start_new_build(cluster: ProcessCluster, builds: dict[int, Mapping[str, str]], i: int) -> None:
    """Start replica i on the new build; back when it answers, caught up and registered."""
    builds[i] = NEW_BUILD
    cluster.start(i)
    settled(cluster, i)
    wait_until(lambda: registered_format(cluster, i) == 2 or None, 30, f"r{i} not registered")


def journal_formats(journal: Path) -> list[tuple[int, int, bytes | None]]:
    """(Raft index, entry format, node id if it is a member registration) of every
    entry of the state machine in a replica's Raft journal."""
    entries, _, _ = scan_log(journal.read_bytes(), journal)
    out = []
    for command, index, _ in entries:
        data = entry_data(bytes(command))
        if data is not None:
            entry = envelope.decode(data, newest=2)
            puts = [r.put for r in entry.requests if r.WhichOneof("op") == "put"]
            member = next((p.key for p in puts if p.table == MEMBERS_TABLE), None)
            out.append((index, entry.version, member))
    return out


def read_back(cluster: ProcessCluster) -> dict[bytes, bytes]:
    async def read() -> dict[bytes, bytes]:
        addresses = [cluster.gcs_address(i) for i in sorted(cluster.members)]
        async with KvClient(addresses, NAMESPACE) as client:
            return await client.read_all(deadline_s=60)

    return asyncio.run(read())


def unexpected_errors(history: list[Op]) -> list[Op]:
    """Calls that failed otherwise than "not here, not now" (which a client retries)."""
    return [
        op for op in history if op.error and not op.error.startswith(("UNAVAILABLE", "DEADLINE"))
    ]


def test_rolling_upgrade_under_load(tmp_path: Path) -> None:
    builds: dict[int, Mapping[str, str]] = {i: {} for i in range(3)}
    with ProcessCluster(3, tmp_path, GCS_PORT, RAFT_PORT, replica_env=builds.__getitem__) as c:
        c.start()
        first = c.wait_for_leader(60)
        settled(c, first)
        for i in range(3):
            wait_until(lambda i=i: registered_format(c, i) == 1 or None, 30, "not registered")
        followers = sorted(c.members - {first})
        ray = RayLoop(c.gcs_address(followers[-1]), tmp_path / "ray.stop")
        try:
            addresses = tuple(c.gcs_address(i) for i in range(3))
            config = LoadConfig(addresses, writers=4, namespace=NAMESPACE, interval_s=0.01)
            with BackgroundLoad(config) as load:
                load.wait_acks(STEP_ACKS, 30)
                # The leader first: it hands leadership to a follower (old build).
                stop_leader(c, first)
                start_new_build(c, builds, first)
                load.wait_acks(load.acks + STEP_ACKS, 30)
                assert cluster_version(c) == 1
                # The new build leads (as an election may make it) while two members
                # read only format 1: the leader still writes format 1.
                with c.admin(c.wait_for_leader(30)) as admin:
                    admin.transfer_leadership(c.node_id(first))
                assert c.wait_for_leader(30) == first
                load.wait_acks(load.acks + STEP_ACKS, 30)
                assert cluster_version(c) == 1 and c.running() == [0, 1, 2]
                # Then the followers, one at a time: once the last one has registered
                # format 2, the leader writes format 2.
                for i in followers:
                    assert c.stop(i) == 0
                    start_new_build(c, builds, i)
                wait_until(lambda: cluster_version(c) == 2 or None, 10, "format 2 not taken up")
                load.wait_acks(load.acks + STEP_ACKS, 30)
                history = load.stop()
            ray_log = ray.finish()
        finally:
            ray.kill()
        check = check_unique_writes(history, read_back(c))
        assert check.ok, (check.lost[:5], check.phantom[:5])
        assert unexpected_errors(history) == []
        assert [entry for entry in ray_log if entry[2] != "OK"] == []
        formats = journal_formats(c.data_dir(first) / "raft" / "journal")

    # Format 1 until the last replica registered format 2 (registrations are always
    # format 1), then format 2 from the leader's next entries on.
    last = c.node_id(followers[-1]).encode()
    opened = max(index for index, _, member in formats if member == last)
    writes = [(index, version) for index, version, member in formats if member is None]
    assert {version for index, version in writes if index <= opened} == {1}
    after = [version for index, version in writes if index > opened]
    assert after == sorted(after) and after[-1] == 2
    print(f"rolling upgrade: {len(history)} calls, {check.acked} acked, "
          f"{sum(1 for op in history if op.error)} retried; Ray: {len(ray_log)} calls")  # fmt: skip


OLD_BUILD_ENV = "GCS_HA_OLD_BUILD"
OLD_COMMIT = "903041d"  # main before the hand-off and the cluster version gate
ROOT = Path(__file__).resolve().parents[2]


def old_build(tmp_path: Path) -> Path | None:
    """The old build's source: GCS_HA_OLD_BUILD, else OLD_COMMIT exported from this
    repository's history (`git archive`); None without either."""
    given = os.environ.get(OLD_BUILD_ENV)
    if given:
        return Path(given) if (Path(given) / "gcs_ha").is_dir() else None
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", OLD_COMMIT],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    target = tmp_path / "old-build"
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def build_env(source: Path, **extra: str) -> dict[str, str]:
    """Run gcs-ha from `source` (a checkout): it comes first on the path, and the working
    directory is not put before it (PYTHONSAFEPATH)."""
    return {"PYTHONPATH": str(source), "PYTHONSAFEPATH": "1", **extra}


@pytest.mark.release
def test_rolling_upgrade_between_two_builds(tmp_path: Path) -> None:
    """A mixed cluster of two real builds: the old one (main before the hand-off and the
    version gate, or the checkout GCS_HA_OLD_BUILD names) and this one, claiming format
    2. A follower first; then leadership moves to it (`transfer-leader`, which the old
    build has), and the other two follow as followers. Old members never registered a
    format: they count as format 1, so the new leader writes format 1 until they are
    gone."""
    old_source = old_build(tmp_path)
    if old_source is None:
        pytest.skip(f"no old build: {OLD_COMMIT} is not in the history, nor {OLD_BUILD_ENV} set")
    old, new = build_env(old_source), build_env(ROOT, **NEW_BUILD)
    builds: dict[int, Mapping[str, str]] = {i: old for i in range(3)}
    gcs, raft = GCS_PORT + 20, RAFT_PORT + 20
    with ProcessCluster(3, tmp_path, gcs, raft, replica_env=builds.__getitem__) as c:
        c.start()
        leader = c.wait_for_leader(60)
        settled(c, leader)
        followers = sorted(c.members - {leader})
        ray = RayLoop(c.gcs_address(followers[-1]), tmp_path / "ray.stop")
        try:
            addresses = tuple(c.gcs_address(i) for i in range(3))
            config = LoadConfig(addresses, writers=4, namespace=NAMESPACE, interval_s=0.01)
            with BackgroundLoad(config) as load:
                load.wait_acks(STEP_ACKS, 30)
                first = followers[0]
                assert c.stop(first) == 0
                builds[first] = new
                c.start(first)
                settled(c, first)
                load.wait_acks(load.acks + STEP_ACKS, 30)
                # The new build leads two old members: it writes format 1.
                with c.admin(c.wait_for_leader(30)) as admin:
                    admin.transfer_leadership(c.node_id(first))
                assert c.wait_for_leader(30) == first
                wait_until(lambda: registered_format(c, first) == 2 or None, 30, "no format 2")
                load.wait_acks(load.acks + STEP_ACKS, 30)
                assert cluster_version(c) == 1 and c.running() == [0, 1, 2]
                for i in [followers[1], leader]:
                    assert c.stop(i) == 0
                    builds[i] = new
                    c.start(i)
                    settled(c, i)
                wait_until(lambda: cluster_version(c) == 2 or None, 30, "format 2 not taken up")
                load.wait_acks(load.acks + STEP_ACKS, 30)
                history = load.stop()
            ray_log = ray.finish()
        finally:
            ray.kill()
        check = check_unique_writes(history, read_back(c))
        assert check.ok, (check.lost[:5], check.phantom[:5])
        assert unexpected_errors(history) == []
        assert [entry for entry in ray_log if entry[2] != "OK"] == []
        # The old build ran: its registrations do not name a format.
        first_run = c.log_path(leader).read_text().split("==== ")[1]
        assert "in the members table\n" in first_run and "reads entry formats" not in first_run
    print(f"two builds: {len(history)} calls, {check.acked} acked, "
          f"{sum(1 for op in history if op.error)} retried; Ray: {len(ray_log)} calls")  # fmt: skip
