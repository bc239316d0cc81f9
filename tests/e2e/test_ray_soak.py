"""A short soak (issue 12, item 7): a user's Ray workload loops while the gcs-ha leader is
killed and brought back every 12 s; no step fails and the raylet never restarts.

Runs `scripts/ray_soak.py` (its own cluster and head on 127.0.0.5, ports 29000-29499) as
a user would. Timings are reported, not asserted (docs/robustness.md has the long run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ray_soak.py"


def test_nothing_fails_while_the_leader_is_killed_every_12_s() -> None:
    cmd = [sys.executable, str(SCRIPT), "--seconds=45", "--period=12", "--restart-after=1"]
    out = subprocess.run(
        [*cmd, "--base-port=29000"], check=False, capture_output=True, text=True, timeout=400
    )
    report = json.loads(out.stdout[out.stdout.index("{") :])
    print(json.dumps(report["steps"], indent=1), report["elections_s"])
    assert report["errors"] == [] and report["raylet_alive"], report
    assert report["kills"] >= 3 and report["killer_problems"] == []
    assert out.returncode == 0
    for name in ("tasks", "actor", "placement_group", "kv"):
        assert report["steps"][name]["around_kills_n"] > 0, name
