"""`gcs-ha bench storage`: acknowledged writes/s and latency of the replicated store.

Writer tasks call `store.put` on the in-process leader's `ReplicatedStoreClient`, then the
raw LMDB baselines run on the same disk. Mechanism: DESIGN.md ("Mechanism").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcs_ha.bench.common import ProcessSet, run_dir
from gcs_ha.bench.cpu import RoleCpu
from gcs_ha.bench.lmdb_baseline import run_lmdb
from gcs_ha.bench.local_cluster import BenchCluster
from gcs_ha.bench.stats import Point, point_from_latencies
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.consensus.replica import RaftReplica
from gcs_ha.errors import GcsHaError
from gcs_ha.progress import QUIET, Steps
from gcs_ha.server.interpreter import run_front_end
from gcs_ha.storage.store_client import KV_TABLE

log = logging.getLogger(__name__)

ERROR_PAUSE_S = 0.01


@dataclass(frozen=True)
class StorageBenchConfig:
    """What `gcs-ha bench storage` measures."""

    writers: tuple[int, ...] = (1, 16, 128)
    replicas: tuple[int, ...] = (1, 3)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    value_bytes: int = 200
    lmdb_batch: int = 100
    base_port: int = 26000
    data_dir: Path | None = None
    keep: bool = False
    lmdb: bool = True


@dataclass
class _Window:
    """The measurement window and what the writers saw in it."""

    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def point_count(config: StorageBenchConfig) -> int:
    """How many points a run measures (`steps` hears of each)."""
    return len(config.replicas) * len(config.writers) + (2 if config.lmdb else 0)


def run_storage_bench(config: StorageBenchConfig, steps: Steps = QUIET) -> list[dict[str, Any]]:
    """Run every point; returns their JSON records. Stops every process it started."""
    procs = ProcessSet()
    with run_dir(config.data_dir, config.keep) as base:
        try:
            return _run_all(config, base, procs, steps)
        finally:
            procs.close()


def _run_all(
    config: StorageBenchConfig, base: Path, procs: ProcessSet, steps: Steps
) -> list[dict[str, Any]]:
    points: list[Point] = []
    for n in config.replicas:
        # The leader's front end is this process: the replica process's event loop.
        steps.begin(f"gcs-ha-{n}: starting the cluster")
        points += run_front_end(_bench_cluster(config, base / f"gcs-ha-{n}", n, procs, steps))
    if config.lmdb:
        value = os.urandom(config.value_bytes)
        for batch in (1, config.lmdb_batch):
            path = base / f"lmdb-{batch}"
            steps.begin(f"lmdb, {batch} put(s) per transaction")
            points.append(run_lmdb(path, batch, config.duration_s, config.warmup_s, value))
            steps.advance()
    return [p.to_json() for p in points]


async def _bench_cluster(
    config: StorageBenchConfig, base: Path, n: int, procs: ProcessSet, steps: Steps
) -> list[Point]:
    """Start an n-replica cluster and measure every writer count on it."""
    value = os.urandom(config.value_bytes)
    points = []
    cluster = BenchCluster(base, n, config.base_port, procs)
    async with cluster as replica:
        roles = cluster.role_cpu()
        for writers in config.writers:
            steps.begin(f"gcs-ha-{n}: {writers} writer{'s' * (writers != 1)}")
            point = await measure_writers(replica, n, writers, value, config, roles=roles)
            log.info("%s", point.to_json())
            points.append(point)
            steps.advance()
    return points


async def measure_writers(
    replica: RaftReplica,
    n: int,
    writers: int,
    value: bytes,
    config: StorageBenchConfig,
    *,
    roles: RoleCpu,
) -> Point:
    """`writers` concurrent put loops on `replica`'s store: warm-up, then one window."""
    now = time.perf_counter()
    window = _Window(start=now + config.warmup_s, end=now + config.warmup_s + config.duration_s)
    proposer = _proposer(replica)
    tag = f"n{n}w{writers}"
    counters = asyncio.create_task(_count_in_window(proposer, window, roles))
    snaps_before = replica.snapshots_taken()
    await asyncio.gather(*(_writer(replica, f"{tag}/{w}", value, window) for w in range(writers)))
    entries, requests, cpu = await counters
    return point_from_latencies(
        f"gcs-ha-{n}",
        replicas=n,
        writers=writers,
        latencies_s=window.latencies,
        seconds=config.duration_s,
        extra={
            "errors": window.errors,
            "entries_proposed": entries,
            "requests_per_entry": round(requests / entries, 2) if entries else None,
            "snapshots": replica.snapshots_taken() - snaps_before,
            "value_bytes": len(value),
            **roles.per_op(cpu[0], cpu[1], len(window.latencies)),
        },
    )


async def _writer(replica: RaftReplica, prefix: str, value: bytes, window: _Window) -> None:
    """Sequential puts of unique keys until the window ends; records acks inside it."""
    store = replica.store
    seq = 0
    while True:
        began = time.perf_counter()
        if began >= window.end:
            return
        key = f"{prefix}/{seq}".encode()
        seq += 1
        try:
            await store.put(KV_TABLE, key, value)
        except GcsHaError as exc:
            if window.errors == 0:
                log.warning("write failed: %r", exc)
            window.errors += 1
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        done = time.perf_counter()
        if window.start <= done < window.end:
            window.latencies.append(done - began)


async def _count_in_window(
    proposer: GroupCommitProposer, window: _Window, roles: RoleCpu
) -> tuple[int, int, tuple[dict[str, float], dict[str, float]]]:
    """(entries, requests) the proposer sent to Raft during the window, and the CPU by
    role sampled at its start and end."""
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    entries, requests = proposer.entries_proposed, proposer.requests_proposed
    cpu_start = roles.sample()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    cpu_end = roles.sample()
    return (
        proposer.entries_proposed - entries,
        proposer.requests_proposed - requests,
        (cpu_start, cpu_end),
    )


def _proposer(replica: RaftReplica) -> GroupCommitProposer:
    """The replica's group-commit proposer, for its counters."""
    return replica.proposer()


def headline(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Ratios worth a line under the table: gcs-ha-3 against the raw LMDB baselines."""
    by = {(r["system"], r["writers"]): r for r in rows}
    sync = next((r for r in rows if r["system"] == "lmdb-sync"), None)
    lines = []
    for (system, writers), row in sorted(by.items()):
        if system == "gcs-ha-3" and sync and sync["writes_per_s"]:
            ratio = row["writes_per_s"] / sync["writes_per_s"]
            lines.append(f"gcs-ha-3 / lmdb-sync at {writers} writers: {ratio:.2f}x")
    return lines
