"""Runtime environments of Ray's size on gcs-ha (issue 12, item 5): a job submitted with
a 20 MiB working_dir, and a driver whose 200 MiB working_dir is stored while the leader is
killed, with the leader killed once more before its task reads the files.

Ray uploads a working_dir as one internal-KV value of up to 512 MiB (its gRPC message
limit); gcs-ha stores values over 4 MiB as chunks, one replicated write each, and a
manifest last (gcs_ha/storage/large_values.py). `ray job submit` sends the package
through the dashboard, which takes HTTP bodies up to 100 MiB (Ray's
DASHBOARD_CLIENT_MAX_SIZE), so the 200 MiB package comes from a driver's `ray.init`,
which stores it directly. Real processes: a 3-replica gcs-ha cluster on 127.0.0.2 (ports
13400-13412), a head node with the dashboard from `gcs-ha ray-head` (13500-13699), `ray
job submit`, one driver. Payloads are random (a zip cannot shrink them); what runs prints
their SHA-256, which must be the one written.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import (
    RAY_ENV,
    kill_leader,
    ray_head_command,
    ray_on_gcs_ha,
    venv_cli,
    wait_for_dashboard,
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.2"
GCS_PORT, RAFT_PORT = 13400, 13410
DASHBOARD = f"http://{HOST}:13507"
ENV = {**os.environ, **RAY_ENV}
MIB = 1024 * 1024
CHECK = """
import hashlib
with open("payload.bin", "rb") as f:
    print("PAYLOAD", hashlib.sha256(f.read()).hexdigest(), flush=True)
"""
# Stores its working_dir (argv[2]) at ray.init, says "stored", then on "go" runs a task
# that hashes the payload in the working dir it was given.
DRIVER = """
import hashlib, sys
import ray

ray.init(address=sys.argv[1], runtime_env={"working_dir": sys.argv[2]})
print("stored", flush=True)
sys.stdin.readline()

@ray.remote(num_cpus=0)
def digest():
    with open("payload.bin", "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()

print("PAYLOAD", ray.get(digest.remote(), timeout=300), flush=True)
"""


def working_dir(base: Path, size: int) -> tuple[Path, str]:
    wd = base / f"wd-{size}"
    wd.mkdir()
    payload = os.urandom(size)
    (wd / "payload.bin").write_bytes(payload)
    (wd / "check.py").write_text(CHECK)
    return wd, hashlib.sha256(payload).hexdigest()


def kill_during_upload(gcs: ProcessCluster) -> int:
    """Kill the leader once the package's chunks are being written (its applied index
    moves by a few entries); start it again once another leads. The entries it had
    applied past the baseline at the kill (a 200 MiB package is 50 chunks)."""
    leader = gcs.wait_for_leader(timeout=30)
    base = gcs.status(leader).applied_index
    wait_until(
        lambda: gcs.status(leader).applied_index >= base + 5 or None, 120, "no chunk written"
    )
    moved = gcs.status(leader).applied_index - base
    kill_leader(gcs)
    return moved


def submit_job(address: str, wd: Path, log_path: Path) -> str:
    """`ray job submit --working-dir wd -- python check.py`; the job id."""
    submit = venv_cli("ray", "job", "submit", f"--address={address}", f"--working-dir={wd}")
    submit += ["--no-wait", "--", "python", "check.py"]
    out = subprocess.run(submit, check=False, capture_output=True, text=True, env=ENV, timeout=300)
    log_path.write_text(out.stdout + out.stderr)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout.split("Job '")[1].split("'")[0]


def job_logs(address: str, job_id: str) -> str:
    """The logs of a job once it finished; the test fails unless it succeeded."""

    def finished() -> str | None:
        cmd = venv_cli("ray", "job", "status", f"--address={address}", job_id)
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=ENV, timeout=60)
        text = (out.stdout + out.stderr).lower()  # "Job 'raysubmit_...' succeeded"
        return text if any(s in text for s in ("succeeded", "failed", "stopped")) else None

    status = wait_until(finished, 300, "the job did not finish")
    assert "succeeded" in status, status
    cmd = venv_cli("ray", "job", "logs", f"--address={address}", job_id)
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=ENV, timeout=60
    ).stdout


def test_working_dirs_of_20_and_200_mib(tmp_path: Path) -> None:
    with ray_on_gcs_ha(tmp_path, GCS_PORT, RAFT_PORT, HOST, "ghw-") as c:
        c.ray.start("head", ray_head_command(c.address, c.temp_dir, HOST, 13500, dashboard=True))
        wait_for_dashboard(DASHBOARD)

        wd, digest = working_dir(tmp_path, 20 * MIB)  # over the old 16 MiB limit
        job_id = submit_job(DASHBOARD, wd, tmp_path / "submit.log")
        assert f"PAYLOAD {digest}" in job_logs(DASHBOARD, job_id)

        wd, digest = working_dir(tmp_path, 200 * MIB)
        driver = c.ray.driver(DRIVER, c.address, str(wd))
        assert driver.stdin is not None and driver.stdout is not None
        moved = kill_during_upload(c.gcs)
        assert driver.stdout.readline().strip() == "stored", "the driver failed: drivers.log"
        print(f"\nleader killed {moved} entries into storing the 200 MiB package")
        assert moved < 52, "the package was stored whole before the kill"
        kill_leader(c.gcs)  # and once after it was stored
        driver.stdin.write("go\n")
        driver.stdin.flush()
        out, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0 and f"PAYLOAD {digest}" in out, out[-2000:]
