"""Run one pytest test inside network (and mount) namespaces of its own.

Some tests must not reach any real address of the machine: the fuzz test (random
requests name random hosts the GCS then dials) and the newcomer test (Ray dials "the
machine's IP"). `run_test_inside` starts `pytest <node id>` under `unshare -n` (`-m`
too when asked), after shell `setup` commands such as bringing loopback up; the inner
test knows it is inside by the environment variable `marker`. The namespaces end with
the process. Needs root, `unshare` and `ip` (`missing` says what is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

LOOPBACK_UP = "ip link set lo up"


def missing() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "namespaces of its own need root"
    absent = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    return f"{' and '.join(absent)} not found" if absent else None


def run_test_inside(
    node_id: str,
    marker: str,
    basetemp: Path,
    setup: Sequence[str] = (LOOPBACK_UP,),
    *,
    mount: bool = False,
    timeout: float = 900.0,
) -> subprocess.CompletedProcess[str]:
    """Run the test `node_id` (path::name) in a new network namespace (and mount one with
    `mount`) after the shell commands `setup`; its output is captured."""
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", node_id]
    script = " && ".join([*setup, "exec " + " ".join(pytest_cmd)])
    unshare = ["unshare", "-n", *(["-m"] if mount else []), "sh", "-c", script]
    return subprocess.run(
        unshare,
        env={**os.environ, marker: "1", "PYTEST_ADDOPTS": f"--basetemp={basetemp}"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
