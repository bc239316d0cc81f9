"""`gcs-ha bench scale`: a smoke run at tiny N against Ray's gcs_server and gcs-ha-3
(JSON shape, no false deaths, the failover measured, nothing left running), and bad
options refused."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcs_ha.cli import cli

BASE_PORT = 15200


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gcs_ha.cli", "bench", "scale", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_smoke_run_measures_each_system_and_stops_everything(tmp_path: Path) -> None:
    out = bench(
        "--json", "--systems=ray-memory,gcs-ha-3", "--nodes=10", "--actors=20", "--pgs=5",
        "--probes=3", "--settle=1", f"--base-port={BASE_PORT}", "--ip-prefix=127.7",
        f"--data-dir={tmp_path}", "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    rows = json.loads(out.stdout)
    assert [(r["system"], r["nodes"]) for r in rows] == [("ray-memory", 10), ("gcs-ha-3", 10)]
    for row in rows:
        assert row["false_deaths"] == 0
        assert row["actors_per_s"] > 0 and row["pgs_per_s"] > 0
        assert row["view_p50_ms"] <= row["view_p99_ms"]
    ha = rows[1]
    assert ha["elections"] == 0
    assert ha["failover_views_s"] is not None and ha["failover_actor_s"] is not None
    assert set(ha["vs_ray_memory"]) >= {"actors_per_s", "pgs_per_s"}
    for port in (BASE_PORT, BASE_PORT + 10, BASE_PORT + 11, BASE_PORT + 12):
        assert not listening("127.0.0.1", port)
    assert not listening("127.7.0.1", BASE_PORT + 100)
    assert list(tmp_path.iterdir()) == []  # the run directory was removed


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--systems=nope", "choose from"),
        ("--nodes=0", "--nodes"),
        ("--ip-prefix=10.1", "127.<0-255>"),
    ],
)
def test_bad_options_are_refused(option: str, message: str) -> None:
    result = CliRunner().invoke(cli, ["bench", "scale", option])
    assert result.exit_code == 2 and message in result.output
