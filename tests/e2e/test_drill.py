"""`gcs-ha drill` end to end: a short mixed drill that must pass; the teeth (the same
drill against replicas with the unsafe follower-reads switch must fail); and a drill of a
running cluster through the operator's kill/start commands.

Each runs the real command (`python -m gcs_ha.cli drill`); local drills start their own
cluster of `gcs-ha start` processes and stop them by PID. Ports: 127.0.0.1:16000-16799
(a local drill at base B uses gRPC B+i, Raft B+100+i, relay B+200..; bases 16000 and
16300; the running cluster 16700-16752).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.cluster_ops import gather_status
from gcs_ha.errors import GcsHaError
from gcs_ha.processes import replica_command
from gcs_ha.secret import generate_secret_file
from gcs_ha.testing.polling import wait_until

GCS_HA = [sys.executable, "-m", "gcs_ha.cli"]
ALL_KINDS = "kill-leader,kill-random,pause,partition-leader,partition-split,powerloss,churn"


def drill(tmp_path: Path, *args: str, timeout: float = 400) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report"
    proc = subprocess.run(
        [*GCS_HA, "drill", "--json", f"--report={report}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON (exit {proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr  # no progress bar into a pipe
    assert "load running" in proc.stderr  # but the notes, as plain lines
    return proc.returncode, result, proc.stderr


def test_bad_options_get_one_clear_line() -> None:
    proc = subprocess.run(
        [*GCS_HA, "drill", "--kinds", "kill-leader,meteor"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "meteor" in proc.stderr and "kill-leader" in proc.stderr
    proc = subprocess.run(
        [*GCS_HA, "drill", "--replicas", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--replicas" in proc.stderr


@pytest.mark.slow
def test_short_mixed_drill_passes(tmp_path: Path) -> None:
    """About ten faults of every kind under load: no violation, nothing lost, replicas
    agree, and every fault was carried out."""
    code, result, stderr = drill(
        tmp_path, "--faults=10", f"--kinds={ALL_KINDS}", "--seed=5", "--base-port=16000"
    )
    assert code == 0, stderr[-3000:]
    assert result["passed"] is True
    assert result["linearizability"]["violation_count"] == 0
    assert result["linearizability"]["ops"] > 1000
    assert result["lost_writes"]["count"] == 0 and result["phantom_writes"]["count"] == 0
    assert result["divergent"] is False and len(result["digests"]) == 3
    faults = result["faults"]
    assert faults["count"] == 10 and faults["errors"] == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<svg" in html and "PASS" in html


@pytest.mark.slow
def test_unsafe_follower_reads_make_the_drill_fail(tmp_path: Path) -> None:
    """Followers that answer reads from their own state serve stale values (most of all
    when cut off from the leader): the checker must find it."""
    code, result, _ = drill(
        tmp_path,
        "--faults=3",
        "--kinds=partition-split",
        "--seed=3",
        "--base-port=16300",
        "--unsafe-follower-reads",
    )
    assert code == 1
    assert result["passed"] is False
    assert result["linearizability"]["violation_count"] > 0


def whole(address: str) -> bool | None:
    """Whether the cluster at `address` serves and lists 3 registered members."""
    try:
        view = gather_status(address, timeout=1.0)
    except GcsHaError:
        return None
    registered = [m for m in view.members if m.gcs_address and m.reachable]
    return (view.leader_reachable() and len(registered) == 3) or None


@pytest.mark.slow
def test_drill_of_a_running_cluster_with_the_operators_commands(tmp_path: Path) -> None:
    """`--address` drills a cluster it did not start: the replicas are started here by
    shell scripts (as an operator's service manager would), and the drill kills and
    starts them through --kill-cmd/--start-cmd."""
    secret = tmp_path / "cluster.secret"
    generate_secret_file(secret)
    host, gcs, raft = "127.0.0.1", 16700, 16750
    for i in range(3):
        cmd = replica_command(
            node_id=f"r{i}",
            data_dir=tmp_path / f"r{i}",
            raft_address=f"{host}:{raft + i}",
            gcs_address=f"{host}:{gcs + i}",
            peers=[f"{host}:{raft + j}" for j in range(3) if j != i],
            cluster_name="drill-remote",
            secret_file=secret,
        )
        line = " ".join(shlex.quote(part) for part in cmd)
        script = f"{line} >> {tmp_path}/r{i}.log 2>&1 &\necho $! > {tmp_path}/r{i}.pid\n"
        (tmp_path / f"start-r{i}.sh").write_text(script)
    try:
        for i in range(3):
            subprocess.run(["sh", str(tmp_path / f"start-r{i}.sh")], check=True)
        wait_until(lambda: whole(f"{host}:{gcs}"), 60, "the cluster did not come up")
        refused = subprocess.run(
            [*GCS_HA, "drill", f"--address={host}:{gcs}", "--duration=5", "--kill-cmd=true",
             "--start-cmd=true"],
            capture_output=True, text=True, timeout=60, check=False,
            env={k: v for k, v in os.environ.items() if k != "GCS_HA_SECRET"},
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert "needs the cluster secret" in refused.stderr
        code, result, stderr = drill(
            tmp_path,
            f"--address={host}:{gcs}",
            "--duration=15",
            "--faults=2",
            f"--kill-cmd=kill -9 $(cat {tmp_path}/{{node_id}}.pid)",
            f"--start-cmd=sh {tmp_path}/start-{{node_id}}.sh",
            "--seed=2",
            f"--secret-file={secret}",
        )
    finally:
        for pid_file in tmp_path.glob("r*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert code == 0, stderr[-3000:]
    assert result["passed"] is True
    assert result["faults"]["count"] == 2 and result["faults"]["errors"] == 0
    assert set(result["faults"]["by_kind"]) <= {"kill-leader", "kill-random"}
    assert len(result["digests"]) == 3 and result["linearizability"]["ops"] > 100
