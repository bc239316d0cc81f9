"""`gcs-ha bench kv`: a smoke run with tiny durations (JSON shape, cleanup), the load
generator's import isolation, the missing-redis message, and the result helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gcs_ha.bench.cpu import ROLES
from gcs_ha.bench.kv_report import add_ratios, median_rows, ratio_lines, render_table

BASE_PORT = 11500
FIELDS = {"system", "op", "clients", "ops_per_s", "p50_ms", "p99_ms", "errors", "server_cores"}
ROLE_FIELDS = [f"{role}_cpu_ms_per_op" for role in ROLES]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gcs_ha.cli", "bench", "kv", *args],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        check=False,
    )


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_smoke_run_prints_every_point_and_stops_everything(tmp_path: Path) -> None:
    systems = ["ray-memory", "gcs-ha-1", "gcs-ha-3"]
    if shutil.which("redis-server"):
        systems.insert(1, "ray-redis")
    out = bench(
        "--json",
        "--duration=0.3",
        "--warmup=0.1",
        "--clients=1,2",
        f"--systems={','.join(systems)}",
        f"--base-port={BASE_PORT}",
        f"--data-dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout)
    assert [(r["system"], r["op"], r["clients"]) for r in rows] == [
        (s, op, n) for s in systems for op in ("put", "get") for n in (1, 2)
    ]
    for point in rows:
        assert point.keys() >= FIELDS
        assert point["ops_per_s"] > 0 and point["errors"] == 0, point
        assert 0 < point["p50_ms"] <= point["p99_ms"], point
    ha3 = [r for r in rows if r["system"] == "gcs-ha-3"]
    assert all("vs_ray_memory" in r for r in ha3)
    assert ("vs_ray_redis" in ha3[0]) == ("ray-redis" in systems)
    # CPU per op by replica role: both processes of every replica are counted (/proc
    # counts in 10 ms ticks, so one short point may show none; all of them together do).
    for point in rows:
        roles = [point.get(f) for f in ROLE_FIELDS]
        if not point["system"].startswith("gcs-ha"):
            assert roles == [None, None, None], point
        else:
            assert (roles[2] is None) == (point["system"] == "gcs-ha-1"), point
    for field in ROLE_FIELDS:
        values = [r[field] for r in ha3]
        assert min(values) >= 0 and sum(values) > 0, (field, values)
    assert "gcs-ha-3 =" in out.stderr  # the ratio lines go to stderr with --json
    # Every server was stopped and the run directory removed.
    for port in (BASE_PORT, BASE_PORT + 1, BASE_PORT + 10, BASE_PORT + 11, BASE_PORT + 20):
        assert not listening(port), port
    assert list(tmp_path.iterdir()) == []


def test_load_generator_imports_no_gcs_ha_protos() -> None:
    code = (
        "import sys, gcs_ha.bench.kv_client\n"
        "print([m for m in sys.modules if m.startswith('gcs_ha.proto')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_missing_redis_server_is_a_clear_error() -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    out = bench("--systems=ray-redis", f"--base-port={BASE_PORT}", env=env)
    assert out.returncode == 2
    assert "apt-get install -y redis-server" in out.stderr


def test_unknown_system_is_refused() -> None:
    out = bench("--systems=ray-memory,etcd")
    assert out.returncode == 2
    assert "choose from" in out.stderr


def row(system: str, clients: int, ops: float, op: str = "put") -> dict[str, object]:
    return {"system": system, "op": op, "clients": clients, "ops_per_s": ops,
            "p50_ms": 1.0, "p99_ms": 2.0}  # fmt: skip


def test_ratios_medians_and_table() -> None:
    runs = [
        [row("ray-redis", 16, 1000.0), row("ray-memory", 16, 4000.0), row("gcs-ha-3", 16, 500.0)],
        [row("ray-redis", 16, 2000.0), row("ray-memory", 16, 2000.0), row("gcs-ha-3", 16, 900.0)],
        [row("ray-redis", 16, 1500.0), row("ray-memory", 16, 3000.0), row("gcs-ha-3", 16, 600.0)],
    ]
    rows = add_ratios(median_rows(runs))
    ha3 = next(r for r in rows if r["system"] == "gcs-ha-3")
    assert ha3["ops_per_s"] == 600.0 and ha3["runs"] == 3
    assert ha3["vs_ray_redis"] == 0.4 and ha3["vs_ray_memory"] == 0.2
    assert ratio_lines(rows) == ["put, 16 clients: gcs-ha-3 = 0.40x ray-redis, 0.20x ray-memory"]
    gets = add_ratios([row("ray-redis", 4, 100.0, "get"), row("gcs-ha-3", 4, 80.0, "get")])
    assert gets[1]["vs_ray_redis"] == 0.8
    assert ratio_lines(gets) == ["get, 4 clients: gcs-ha-3 = 0.80x ray-redis"]
    table = render_table(rows).splitlines()
    assert table[0].split()[:3] == ["SYSTEM", "OP", "CLIENTS"]
    assert table[3].split()[:4] == ["gcs-ha-3", "put", "16", "600"]
