"""The progress bar of a long command, end to end: `gcs-ha drill --progress` draws it on
stderr even into a pipe (asked for), and the JSON on stdout stays clean. That nothing is
drawn into a pipe by default is checked where the commands already run (the bench
storage and drill tests assert a stderr without control characters) and in
tests/unit/test_progress.py.

One replica, drilled through --address for one second (no fault commands: no faults).
Ports: 127.0.0.1:14500 (gRPC) and 14550 (Raft).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gcs_ha.testing.cluster import ProcessCluster

GCS_HA = [sys.executable, "-m", "gcs_ha.cli"]


@pytest.mark.slow
def test_a_drill_asked_for_progress_draws_it_on_stderr_only(tmp_path: Path) -> None:
    with ProcessCluster(1, tmp_path, gcs_port=14500, raft_port=14550) as cluster:
        cluster.start()
        cluster.wait_for_members(1, cluster.wait_for_leader(timeout=30))
        proc = subprocess.run(
            [*GCS_HA, "drill", f"--address={cluster.gcs_address(0)}", "--duration=1",
             f"--secret-file={cluster.secret_file}", "--json", "--progress"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert result["passed"] is True and result["linearizability"]["ops"] > 0
    assert "\x1b[" in proc.stderr and "ETA" in proc.stderr  # the bar, drawn
    assert "load running (8 clients)" in proc.stderr  # the notes, above it
    assert "\x1b" not in proc.stdout
