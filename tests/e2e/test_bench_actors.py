"""`gcs-ha bench actors`: a smoke run with tiny counts (JSON shape, the pending actors
really registered, cleanup), which process imports Ray, and the result helpers.
They assert nothing about speed (benchmarks measure speed, tests do not).
Ports: 127.0.0.5:15500-15999 (the bench's default base 35000 stays free for real runs).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.bench.actors import ActorsBenchConfig
from gcs_ha.bench.actors_report import add_ratios, median_rows, memory_lines, render_table
from gcs_ha.bench.actors_systems import HOST
from gcs_ha.bench.cpu import ROLES
from gcs_ha.errors import ConfigError
from gcs_ha.testing.sessions import kill_sessions, session_members

BASE_PORT = 15500
SYSTEMS = ("ray-memory", "gcs-ha-3")
OPS = ("actors", "actors_kill", "pgs_create", "pgs_remove", "register", "memory")
MEMORY_ACTORS = 30


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gcs_ha.cli", "bench", "actors", *args],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


def listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def ray_temp_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("gha-ba-*"))


@pytest.mark.slow
def test_smoke_run_prints_every_row_and_stops_everything(tmp_path: Path) -> None:
    temp_before = ray_temp_dirs()
    out = bench(
        "--json",
        "--actors=2",
        "--pgs=3",
        f"--memory-actors={MEMORY_ACTORS}",
        f"--systems={','.join(SYSTEMS)}",
        f"--base-port={BASE_PORT}",
        f"--data-dir={tmp_path}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout)
    assert [(r["system"], r["op"]) for r in rows] == [(s, op) for s in SYSTEMS for op in OPS]
    counts = {"actors": 2, "actors_kill": 2, "pgs_create": 3, "pgs_remove": 3}
    for row in rows:
        assert row["count"] == counts.get(row["op"], MEMORY_ACTORS), row
        unit = "pgs_per_s" if row["op"].startswith("pgs") else "actors_per_s"
        if row["op"] != "memory":
            assert row[unit] > 0 and row["seconds"] > 0, row
    ray_mem, ha_mem = rows[5], rows[11]
    assert ray_mem["process"] == "gcs_server" and "followers_rss_mib" not in ray_mem
    assert ha_mem["process"].endswith("(leader)") and len(ha_mem["followers_rss_mib"]) == 2
    for mem in (ray_mem, ha_mem):
        assert mem["rss_before_mib"] > 0, mem
        assert 0 < mem["anon_mib"] <= mem["rss_mib"] <= mem["peak_mib"], mem
    # A replica is its front end and its consensus process: both are counted.
    assert ha_mem["rss_mib"] == pytest.approx(
        ha_mem["frontend_rss_mib"] + ha_mem["consensus_rss_mib"], abs=0.2
    )
    assert all("vs_ray_memory" in r for r in rows[6:])
    # gcs-ha's steps: CPU per actor or group, by replica role (/proc counts in 10 ms
    # ticks, so a short step may show none; all steps together do).
    for role in ROLES:
        values = [row[f"{role}_cpu_ms_per_op"] for row in rows[6:11]]
        assert min(values) >= 0 and sum(values) > 0, (role, values)
    assert "gcs-ha-3: r" in out.stderr  # the memory lines go to stderr with --json
    # Every process was stopped, the run directory and Ray's temp dir removed.
    for port in (BASE_PORT, BASE_PORT + 10, BASE_PORT + 12, BASE_PORT + 20, BASE_PORT + 100):
        assert not listening(port), port
    assert list(tmp_path.iterdir()) == []
    assert ray_temp_dirs() <= temp_before


def test_driver_imports_ray_and_no_gcs_ha_protos_the_bench_no_ray() -> None:
    code = (
        "import sys, {module}\n"
        "print(sorted({{m.split('.')[0] for m in sys.modules if m.startswith('ray')}}),"
        " [m for m in sys.modules if m.startswith('gcs_ha.proto')] != [])"
    )
    for module, want in (
        ("gcs_ha.bench.actors_driver", "['ray'] False"),
        ("gcs_ha.bench.actors", "[] True"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", code.format(module=module)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert out.stdout.strip() == want, module


def test_impossible_options_are_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="exceed"):
        ActorsBenchConfig(actors=201, num_cpus=2).check()
    with pytest.raises(ConfigError, match="worker ports"):
        ActorsBenchConfig(actors=260, num_cpus=4).check()
    with pytest.raises(ConfigError, match="choose from"):
        ActorsBenchConfig(systems=("ray-redis",)).check()
    out = bench("--systems=etcd")
    assert out.returncode == 2 and "choose from" in out.stderr


def test_session_members_finds_a_session_and_its_children() -> None:
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        members: list[int] = []
        for _ in range(50):
            members = session_members(proc.pid)
            if len(members) == 3:
                break
            time.sleep(0.1)
        assert proc.pid in members and len(members) == 3
    finally:
        kill_sessions([proc.pid])
        proc.wait()
    assert session_members(proc.pid) == []


def row(system: str, op: str, **fields: Any) -> dict[str, Any]:
    return {"system": system, "op": op, "count": 10, "seconds": 1.0, **fields}


def one_run(ray_rate: float, ha_rate: float, ha_rss: float) -> list[dict[str, Any]]:
    """A run's rows: both systems' actors rate and memory (Ray's gcs_server at 100 MiB)."""
    mem = {"rss_before_mib": 50.0, "anon_mib": 80.0, "peak_mib": 100.0, "kib_per_actor": 5.0}
    return [
        row("ray-memory", "actors", actors_per_s=ray_rate),
        row("ray-memory", "memory", rss_mib=100.0, process="gcs_server", **mem),
        row("gcs-ha-3", "actors", actors_per_s=ha_rate),
        row("gcs-ha-3", "memory", rss_mib=ha_rss, process="r0 (leader)", **mem),
    ]


def test_ratios_medians_table_and_memory_lines() -> None:
    runs = [one_run(10.0, 4.0, 300.0), one_run(20.0, 6.0, 200.0), one_run(30.0, 8.0, 250.0)]
    single = add_ratios([dict(r) for r in runs[0]])
    assert single[2]["vs_ray_memory"] == 0.4 and single[3]["vs_ray_memory"] == 3.0
    rows = median_rows(runs)
    by = {(r["system"], r["op"]): r for r in rows}
    assert by["gcs-ha-3", "actors"]["actors_per_s"] == 6.0 and by["gcs-ha-3", "actors"]["runs"] == 3
    assert by["gcs-ha-3", "actors"]["vs_ray_memory"] == 0.3  # ratio of the medians
    assert by["gcs-ha-3", "memory"]["vs_ray_memory"] == 2.5
    assert "vs_ray_memory" not in by["ray-memory", "actors"]
    table = render_table(rows).splitlines()
    assert table[0].split() == ["SYSTEM", "OP", "COUNT", "SECONDS", "PER", "S", "RSS", "MIB", "VS",
                                "RAY", "LEAD", "FE", "LEAD", "CONS", "FOLLOWER"]  # fmt: skip
    assert table[3].split() == ["gcs-ha-3", "actors", "10", "1.00", "6.0", "-", "0.30x",
                                "-", "-", "-"]  # fmt: skip
    assert table[4].split()[-5:-3] == ["250.0", "2.50x"]
    assert memory_lines(rows)[1].startswith("gcs-ha-3: r0 (leader) 50 -> 250 MiB RSS")


def test_a_failed_step_shows_as_error() -> None:
    failed = row("gcs-ha-3", "register", registered=40, not_created=2, error="stalled")
    del failed["seconds"]
    rows = add_ratios([row("ray-memory", "register", actors_per_s=100.0), failed])
    assert "vs_ray_memory" not in rows[1]
    assert render_table(rows).splitlines()[2].split() == [
        "gcs-ha-3", "register", "10", "-", "error", "-", "-", "-", "-", "-"
    ]  # fmt: skip
    assert memory_lines(rows) == ["gcs-ha-3: register failed: stalled"]
