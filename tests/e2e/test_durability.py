"""Durability drills end to end: real `gcs-ha start` replicas, real disks, a real KV load.

A `BackgroundLoad` (gcs_ha.testing.kvload) writes unique keys through Ray's InternalKV
protocol to the serving leader while the drill kills replicas with SIGKILL, simulates a
power loss, or changes the membership. Afterwards every acknowledged write must be stored
with its value (read back through the leader), nothing may be stored that certainly failed,
and every replica's admin Digest (applied index + sha256 of all tables) must be identical
once they have caught up. Each check returns a list of violations, so the same check can be
shown to catch a broken cluster (`test_power_loss_without_fsync_is_detected`).

Sizes come from the environment, for long runs (docs/robustness.md):
    GCS_HA_DRILL_KILLS         leader kills in test_leader_kill_under_load (3)
    GCS_HA_DRILL_KILL_ALL      rounds of kill -9 of every replica (2)
    GCS_HA_DRILL_POWER_LOSSES  rounds of simulated power loss (1)
    GCS_HA_DRILL_WRITERS       concurrent writers (8)
    GCS_HA_DRILL_WRITE_S       seconds of writing before each fault (1.5)
    GCS_HA_DRILL_REPORT        a file; each drill appends its numbers as one JSON line
Ports: gRPC 127.0.0.1:27000-27399, Raft 127.0.0.1:27500-27899 (a block of 10 per test).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gcs_ha.cluster_ops import leave
from gcs_ha.consensus.journal import CRASH_SIM_ENV, UNSAFE_SKIP_FSYNC_ENV
from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.processes import signal_replica
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.kvload import (
    BackgroundLoad,
    KvClient,
    LoadConfig,
    Op,
    Outcome,
    check_unique_writes,
    max_gap_between,
    outage_around,
    summarize,
)
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.powerloss import simulate_power_loss

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("GCS_HA_DRILL_KILLS", "3"))
KILL_ALL_ROUNDS = int(os.environ.get("GCS_HA_DRILL_KILL_ALL", "2"))
POWER_LOSSES = int(os.environ.get("GCS_HA_DRILL_POWER_LOSSES", "1"))
WRITERS = int(os.environ.get("GCS_HA_DRILL_WRITERS", "8"))
WRITE_S = float(os.environ.get("GCS_HA_DRILL_WRITE_S", "1.5"))
REPORT = os.environ.get("GCS_HA_DRILL_REPORT")
NAMESPACE = b"drill"
LEADER_TIMEOUT_S = 60.0
# After a restart from a power loss: a healthy cluster elects and serves in a few seconds.
RESTART_LEADER_TIMEOUT_S = 20.0
# Acknowledgements that show the load goes on (through a new leader, after a change).
PROGRESS_ACKS = 30

_blocks = itertools.count(int(os.environ.get("GCS_HA_DRILL_PORT_BLOCK", "0")))


@pytest.fixture
def ports() -> tuple[int, int]:
    """(gRPC base port, Raft base port) of a block of 10 ports no other test uses."""
    block = next(_blocks) % 40
    return 27000 + 10 * block, 27500 + 10 * block


# -- helpers ----------------------------------------------------------------------------


def load_config(cluster: ProcessCluster, prefix: bytes) -> LoadConfig:
    addresses = tuple(cluster.gcs_address(i) for i in sorted(cluster.members))
    return LoadConfig(addresses, writers=WRITERS, namespace=NAMESPACE, key_prefix=prefix)


def report(drill: str, **numbers: object) -> None:
    """Print the drill's numbers (pytest -s shows them) and append them to REPORT."""
    line = json.dumps({"drill": drill, **numbers}, sort_keys=True)
    print(f"DRILL {line}")
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(line + "\n")


def kill_all(cluster: ProcessCluster) -> None:
    """SIGKILL every running replica at (nearly) the same moment, then reap them."""
    running = cluster.running()
    for i in running:
        process = cluster.process(i)
        assert process is not None
        signal_replica(process, signal.SIGKILL)
    for i in running:
        cluster.kill(i)


def compact(cluster: ProcessCluster, i: int) -> None:
    """Snapshot replica i and compact its Raft log now (admin Compact)."""
    with cluster.admin(i, timeout=60.0) as admin:
        admin.compact()


def wait_caught_up(cluster: ProcessCluster, i: int, timeout: float = LEADER_TIMEOUT_S) -> None:
    """Wait until replica i applied everything the leader had committed when asked."""
    target = cluster.status(cluster.wait_for_leader(LEADER_TIMEOUT_S)).commit_index

    def caught_up() -> bool | None:
        try:
            return cluster.status(i, timeout=1.0).applied_index >= target or None
        except GcsHaError:
            return None

    wait_until(caught_up, timeout, f"replica {i} did not catch up to index {target}")


def read_back(cluster: ProcessCluster) -> dict[bytes, bytes]:
    """Every key of the drill's namespace with its value, read through the leader."""

    async def read() -> dict[bytes, bytes]:
        addresses = [cluster.gcs_address(i) for i in sorted(cluster.members)]
        async with KvClient(addresses, NAMESPACE) as client:
            return await client.read_all(deadline_s=LEADER_TIMEOUT_S)

    return asyncio.run(read())


def digest_violations(cluster: ProcessCluster, timeout: float = 60.0) -> list[str]:
    """[] when every member reaches the same applied index with the same digest."""
    seen: dict[int, tuple[int, str] | None] = {}

    def settled() -> bool | None:
        for i in sorted(cluster.members):
            try:
                seen[i] = cluster.digest(i, timeout=5.0)
            except GcsHaError:
                seen[i] = None
        indexes = {d[0] if d else None for d in seen.values()}
        return (len(indexes) == 1 and None not in indexes) or None

    try:
        wait_until(settled, timeout, "replicas did not reach one applied index")
    except UnavailableError:
        return [f"replicas never caught up to one applied index: {seen}"]
    digests = {d[1] for d in seen.values() if d}
    return [] if len(digests) == 1 else [f"replicas diverged at one applied index: {seen}"]


def write_violations(history: Sequence[Op], stored: dict[bytes, bytes]) -> list[str]:
    check = check_unique_writes(history, stored)
    out = []
    if check.lost:
        out.append(f"{len(check.lost)} of {check.acked} acknowledged writes lost: {check.lost[:5]}")
    if check.phantom:
        n = len(check.phantom)
        out.append(f"{n} keys stored that were never written or certainly failed: "
                   f"{check.phantom[:5]}")  # fmt: skip
    return out


def cluster_violations(cluster: ProcessCluster, history: Sequence[Op]) -> list[str]:
    """Everything acknowledged is stored, nothing impossible is, and replicas agree."""
    return write_violations(history, read_back(cluster)) + digest_violations(cluster)


def state_ahead_of_log(cluster: ProcessCluster) -> list[str]:
    """Replicas whose tables (LMDB applied index) are ahead of their own Raft log.

    An applied entry was committed and is on this replica's log durably (it is flushed before
    it is acknowledged or counted). If the log lost it, the next entries proposed at those
    indexes are skipped by the state machine (apply is idempotent by index): committed
    writes silently vanish on this replica. The Digest is read first and the Status at least
    one status period later, so a log growing meanwhile cannot raise a false alarm.
    """
    applied = {i: cluster.digest(i)[0] for i in sorted(cluster.members)}
    time.sleep(0.2)
    out = []
    for i, index in applied.items():
        last = cluster.status(i).last_log_index
        if index > last:
            out.append(f"r{i}: tables at index {index}, Raft log ends at {last}")
    return out


def outage_numbers(history: Sequence[Op], kills: Sequence[float]) -> dict[str, object]:
    windows = [outage_around(history, t) for t in kills]
    durations = [w.duration for w in windows if w is not None]
    return {
        "outage_median_s": round(statistics.median(durations), 3) if durations else None,
        "outage_max_s": round(max(durations), 3) if durations else None,
        "outages_s": [round(d, 3) for d in durations],
    }


# -- a: kill -9 of the leader, again and again ----------------------------------------


def test_leader_kill_under_load(tmp_path: Path, ports: tuple[int, int]) -> None:
    with ProcessCluster(3, tmp_path, *ports) as cluster:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        kills: list[float] = []
        with BackgroundLoad(load_config(cluster, b"a")) as load:
            load.wait_acks(PROGRESS_ACKS, LEADER_TIMEOUT_S)
            for cycle in range(KILLS):
                time.sleep(WRITE_S)
                leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
                if cycle % 2:  # every other victim restarts from a snapshot + the log after it
                    compact(cluster, leader)
                kills.append(time.monotonic())
                cluster.kill(leader)
                cluster.wait_for_leader(LEADER_TIMEOUT_S)
                load.wait_acks(load.acks + PROGRESS_ACKS, LEADER_TIMEOUT_S)
                cluster.restart(leader)
                wait_caught_up(cluster, leader)
            time.sleep(WRITE_S)
            history = load.stop()
        violations = cluster_violations(cluster, history)
        summary = summarize(history)
        report(
            "leader_kill",
            kills=len(kills),
            acked=summary.acked,
            unknown=summary.unknown,
            failed=summary.failed,
            violations=violations,
            **outage_numbers(history, kills),
        )
        assert violations == []
        assert summary.acked > 0


# -- b: kill -9 of every replica ---------------------------------------------------------


def test_kill_all_under_load(tmp_path: Path, ports: tuple[int, int]) -> None:
    with ProcessCluster(3, tmp_path, *ports) as cluster:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        with BackgroundLoad(load_config(cluster, b"b")) as load:
            load.wait_acks(PROGRESS_ACKS, LEADER_TIMEOUT_S)
            for _ in range(KILL_ALL_ROUNDS):
                time.sleep(WRITE_S)
                kill_all(cluster)
                acks_at_kill = load.acks
                cluster.start()
                cluster.wait_for_leader(LEADER_TIMEOUT_S)
                load.wait_acks(acks_at_kill + PROGRESS_ACKS, LEADER_TIMEOUT_S)
            history = load.stop()
        violations = cluster_violations(cluster, history)
        summary = summarize(history)
        report("kill_all", rounds=KILL_ALL_ROUNDS, acked=summary.acked, violations=violations)
        assert violations == []
        assert_write_check_has_teeth(cluster, history)


def assert_write_check_has_teeth(cluster: ProcessCluster, history: list[Op]) -> None:
    """Delete one acknowledged key and store one that was never written, through the
    leader: the read-back check must report both."""
    acked = next(op for op in history if op.kind == "put" and op.outcome is Outcome.OK)

    async def tamper() -> list[Op]:
        addresses = [cluster.gcs_address(i) for i in sorted(cluster.members)]
        async with KvClient(addresses, NAMESPACE) as client:
            return [await client.delete(acked.key), await client.put(b"b-never", b"x")]

    assert all(op.outcome is Outcome.OK for op in asyncio.run(tamper()))
    found = write_violations(history, read_back(cluster))
    assert len(found) == 2, found
    assert repr(acked.key) in found[0]
    assert "b'b-never'" in found[1]


# -- c: power loss (journal fsync) -------------------------------------------------------


def power_loss_drill(
    tmp_path: Path, ports: tuple[int, int], rounds: int
) -> tuple[list[str], dict[str, object]]:
    """Load (with a compaction of the leader's log on the way), kill -9 all, drop every
    journal's unsynced data, restart; then check.

    Returns the violations found and numbers for the report. Stops at the first check that
    makes the rest meaningless (no leader after the restart).
    """
    violations: list[str] = []
    history: list[Op] = []
    dropped = damaged = 0
    with ProcessCluster(3, tmp_path, *ports) as cluster:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        for r in range(rounds):
            with BackgroundLoad(load_config(cluster, b"p%d-" % r)) as load:
                load.wait_acks(PROGRESS_ACKS, LEADER_TIMEOUT_S)
                time.sleep(WRITE_S / 2)
                compact(cluster, cluster.wait_for_leader(LEADER_TIMEOUT_S))
                time.sleep(WRITE_S / 2)
                kill_all(cluster)
                history += load.stop()
            for i in sorted(cluster.members):
                loss = simulate_power_loss(cluster.data_dir(i))
                dropped += loss.journal.log_bytes_dropped
                damaged += loss.lmdb_damaged
            cluster.start()
            cluster.wait_ready(LEADER_TIMEOUT_S)
            violations += state_ahead_of_log(cluster)
            try:
                cluster.wait_for_leader(RESTART_LEADER_TIMEOUT_S)
            except UnavailableError:
                violations.append(f"no replica serves {RESTART_LEADER_TIMEOUT_S} s after restart")
                numbers: dict[str, object] = {"dropped_bytes": dropped}
                return violations, numbers
        after = post_restart_load(cluster, violations)
        history += after
        violations += cluster_violations(cluster, history)
        rebuilt = sum(rebuilds(cluster.log_path(i)) for i in sorted(cluster.members))
    if rebuilt != damaged:
        violations.append(f"{damaged} LMDBs were damaged but {rebuilt} rebuilds were logged")
    numbers = {
        "rounds": rounds,
        "acked": summarize(history).acked,
        "dropped_bytes": dropped,
        "lmdb_rebuilt": rebuilt,
    }
    return violations, numbers


def rebuilds(log: Path) -> int:
    """How many times a replica rebuilt its LMDB after a power loss (from its log)."""
    return log.read_text(errors="replace").count("not stopped cleanly before a reboot")


def post_restart_load(cluster: ProcessCluster, violations: list[str]) -> list[Op]:
    """New writes after the restart: a healthy cluster acknowledges them, and never answers
    that an entry was applied without results (the state machine skipped a new entry)."""
    with BackgroundLoad(load_config(cluster, b"after-")) as load:
        try:
            load.wait_acks(PROGRESS_ACKS * 3, LEADER_TIMEOUT_S)
        except UnavailableError as exc:
            violations.append(f"writes are not acknowledged after the restart: {exc}")
        history = load.stop()
    skipped = [op for op in history if "applied without results" in op.error]
    if skipped:
        violations.append(f"{len(skipped)} new writes were skipped by the state machine")
    return history


def test_power_loss_keeps_acknowledged_writes(
    tmp_path: Path, ports: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_SIM_ENV, "1")
    monkeypatch.delenv(UNSAFE_SKIP_FSYNC_ENV, raising=False)
    violations, numbers = power_loss_drill(tmp_path, ports, POWER_LOSSES)
    report("power_loss", violations=violations, **numbers)
    assert violations == []
    # Every replica's LMDB was dirty when the power went, so every one was rebuilt from
    # its snapshot and journal.
    assert numbers["lmdb_rebuilt"] == 3 * POWER_LOSSES


def test_power_loss_without_fsync_is_detected(
    tmp_path: Path, ports: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The teeth of the previous test: with the journal's fsync removed, the very same
    drill and checks must find damage (tables ahead of the log, divergence, loss, ...)."""
    monkeypatch.setenv(CRASH_SIM_ENV, "1")
    monkeypatch.setenv(UNSAFE_SKIP_FSYNC_ENV, "1")
    violations, numbers = power_loss_drill(tmp_path, ports, 1)
    report("power_loss_unsafe", violations=violations, **numbers)
    assert violations, "a power loss without journal fsync went unnoticed"


# -- d: membership changes under load ----------------------------------------------------


def test_join_and_leave_under_load(tmp_path: Path, ports: tuple[int, int]) -> None:
    """A 4th replica joins (gcs-ha join), then an original follower leaves (the same
    procedure as gcs-ha leave), while 8 writers keep writing."""
    with ProcessCluster(3, tmp_path, *ports) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
        with BackgroundLoad(load_config(cluster, b"d")) as load:
            load.wait_acks(PROGRESS_ACKS, LEADER_TIMEOUT_S)
            t_join = time.monotonic()
            new = cluster.join_replica(via=(leader + 1) % 3)  # a follower: follows the hint
            assert cluster.wait_for_members(4, leader, LEADER_TIMEOUT_S) == ["r0", "r1", "r2", "r3"]
            wait_caught_up(cluster, new)
            load.wait_acks(load.acks + PROGRESS_ACKS, LEADER_TIMEOUT_S)
            t_leave = time.monotonic()
            leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)  # the join may have moved it
            victim = next(i for i in range(3) if i != leader)
            removed = leave(cluster.gcs_address(new), cluster.node_id(victim), cluster.admin_key)
            message = str(removed)
            assert message.endswith("and shut it down"), message
            process = cluster.process(victim)
            assert process is not None
            assert process.wait(30) == 0
            cluster.members.discard(victim)
            expected = [cluster.node_id(i) for i in sorted(cluster.members)]
            for i in sorted(cluster.members):
                assert cluster.wait_for_members(3, i, LEADER_TIMEOUT_S) == expected
            load.wait_acks(load.acks + PROGRESS_ACKS, LEADER_TIMEOUT_S)
            t_end = time.monotonic()
            history = load.stop()
        violations = cluster_violations(cluster, history)
        report(
            "join_leave",
            acked=summarize(history).acked,
            max_gap_join_s=round(max_gap_between(history, t_join, t_leave), 3),
            max_gap_leave_s=round(max_gap_between(history, t_leave, t_end), 3),
            unknown=sum(op.outcome is Outcome.UNKNOWN for op in history),
            violations=violations,
        )
        assert violations == []


@pytest.mark.slow
def test_leadership_transfer_under_load(tmp_path: Path, ports: tuple[int, int]) -> None:
    """TransferLeadership (what `gcs-ha leave` of the leader does first) while 8 writers
    write: each of 5 transfers must hand leadership to another replica."""
    with ProcessCluster(3, tmp_path, *ports) as cluster:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        with BackgroundLoad(load_config(cluster, b"e")) as load:
            load.wait_acks(PROGRESS_ACKS * 3, LEADER_TIMEOUT_S)
            for _ in range(5):
                leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
                with cluster.admin(leader) as admin:
                    admin.transfer_leadership("")
                if cluster.wait_for_leader(LEADER_TIMEOUT_S) == leader:
                    raise UnavailableError(f"r{leader} leads again after the transfer")
                load.wait_acks(load.acks + PROGRESS_ACKS, LEADER_TIMEOUT_S)
            history = load.stop()
        assert cluster_violations(cluster, history) == []
