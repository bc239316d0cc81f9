"""`gcs-ha bench storage` and `gcs-ha bench failover` end to end, with tiny durations.

These check that the benchmarks run, clean up, and print the documented JSON shape;
they assert nothing about speed (benchmarks measure speed, tests do not).
Ports: 127.0.0.1:26500-26699.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GCS_HA = [sys.executable, "-m", "gcs_ha.cli"]


def run_bench(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GCS_HA_SECRET"}
    return subprocess.run(
        [*GCS_HA, "bench", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_bad_writers_list() -> None:
    result = run_bench("storage", "--writers", "1,x")
    assert result.returncode == 2
    assert "comma-separated list of integers" in result.stderr


@pytest.mark.slow
def test_storage_json_shape(tmp_path: Path) -> None:
    result = run_bench(
        "storage",
        "--json",
        "--duration=0.3",
        "--warmup=0.1",
        "--writers=1,4",
        "--replicas=1,3",
        f"--data-dir={tmp_path}",
        "--base-port=26500",
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # no bar into a pipe
    rows = json.loads(result.stdout)
    systems = [(r["system"], r["replicas"], r["writers"]) for r in rows]
    assert systems == [
        ("gcs-ha-1", 1, 1),
        ("gcs-ha-1", 1, 4),
        ("gcs-ha-3", 3, 1),
        ("gcs-ha-3", 3, 4),
        ("lmdb-sync", 1, 1),
        ("lmdb-batch", 1, 1),
    ]
    for row in rows:
        assert row["writes"] > 0
        assert row["writes_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    for row in rows[:4]:
        assert row["errors"] == 0
        assert row["entries_proposed"] > 0
        assert row["requests_per_entry"] >= 1
    assert rows[-1]["batch"] == 100
    assert list(tmp_path.iterdir()) == []  # the run directory is removed


@pytest.mark.slow
def test_failover_json_shape(tmp_path: Path) -> None:
    result = run_bench(
        "failover",
        "--json",
        "--kills=1",
        "--settle=0.2",
        f"--data-dir={tmp_path}",
        "--base-port=26600",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kills"] == 1
    assert summary["failed"] == 0
    (kill,) = summary["results"]
    assert kill["new_leader"] not in (None, kill["killed"])
    assert 0 < kill["serving_s"] <= kill["first_ack_s"]
    assert set(summary["first_ack_s"]) == {"median", "min", "max"}
    assert list(tmp_path.iterdir()) == []
