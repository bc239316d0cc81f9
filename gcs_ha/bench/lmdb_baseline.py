"""Raw LMDB baselines on the same disk: what one process gets from LMDB alone.

- `lmdb-sync`: one put per synced write transaction, sequential (the cost of one
  durable write with no replication and no batching).
- `lmdb-batch`: `batch` puts per synced write transaction (what group commit can reach
  at best on one machine).

Both use `LmdbEnv(sync=True)`, the environment the replicas use. A put's latency is the
time until it is durable: for a batch, the time of the whole transaction, since no put
of it is durable before the commit returns.
"""

from __future__ import annotations

import time
from pathlib import Path

from gcs_ha.bench.stats import Point, point_from_latencies
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE


def run_lmdb(path: Path, batch: int, duration_s: float, warmup_s: float, value: bytes) -> Point:
    """Measure synced LMDB puts, `batch` per transaction, for `duration_s` seconds."""
    env = LmdbEnv(path, sync=True)
    try:
        seq = _write_for(env, batch=batch, duration_s=warmup_s, value=value, seq=0, latencies=None)
        latencies: list[float] = []
        start = time.perf_counter()
        end_seq = _write_for(
            env, batch=batch, duration_s=duration_s, value=value, seq=seq, latencies=latencies
        )
        seconds = time.perf_counter() - start
    finally:
        env.close()
    system = "lmdb-sync" if batch == 1 else "lmdb-batch"
    # Every put of a transaction has that transaction's latency: percentiles over
    # transactions are the percentiles over puts.
    return point_from_latencies(
        system,
        replicas=1,
        writers=1,
        latencies_s=latencies,
        seconds=seconds,
        writes=end_seq - seq,
        extra={"batch": batch},
    )


def _write_for(
    env: LmdbEnv,
    *,
    batch: int,
    duration_s: float,
    value: bytes,
    seq: int,
    latencies: list[float] | None,
) -> int:
    """Write transactions of `batch` puts until `duration_s` passed; returns the next seq."""
    deadline = time.perf_counter() + duration_s
    while True:
        began = time.perf_counter()
        if began >= deadline:
            return seq
        with env.write() as txn:
            for _ in range(batch):
                txn.put(KV_TABLE, b"lmdb/%012d" % seq, value)
                seq += 1
        if latencies is not None:
            latencies.append(time.perf_counter() - began)
