"""scripts/ray_churn.py at a small scale: real Ray placement groups and actors on a
3-replica cluster whose leadership is moved (or its leader killed) every 2 s, six times,
while rounds of them are created, used, killed and removed; the driver's checks must
all pass.

Its own checks (in scripts/ray_churn_driver.py) are what this test relies on: every
group CREATED then REMOVED with no bundle resource left, the GCS's view of the node
showing exactly the CPU the bundles and live actors hold, the actors answering, the
detached ones by name, the killed ones DEAD. Ports: 127.0.0.5:12500-12999.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "ray_churn.py"


@pytest.mark.slow
def test_placement_groups_and_actors_survive_leadership_churn(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--events=6", "--pgs=60", "--actors=4", "--period=2",
         "--kill-fraction=0.6", "--seed=2", "--base-port=12500", f"--data-dir={tmp_path}",
         "--timeout=300"],
        capture_output=True, text=True, timeout=500, check=False,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    report = json.loads(done.stdout[done.stdout.rindex("\n{") :])
    assert report["violations"] == [], done.stdout[-3000:] + done.stderr[-3000:]
    assert report["ok"] and done.returncode == 0
    assert report["churn"].get("transfer", 0) + report["churn"].get("kill", 0) >= 6
    assert report["rounds"] >= 1
