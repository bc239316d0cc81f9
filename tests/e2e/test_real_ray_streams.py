"""A Ray driver keeps receiving its workers' output and the errors pushed to it while
the gcs-ha leader is killed twice (issue 12, item 3).

Ray's driver subscribes once, at `ray.init`, to the log channel (what tasks and actors
print, published by the head's log monitor) and to the error channel (errors pushed to
the driver), both with Ray's Python subscriber, which never subscribes again by itself.
Real processes: a 3-replica gcs-ha cluster on 127.0.0.2 (ports 13000-13012), a head node
from `gcs-ha ray-head` (13100-13299), one driver. Each round the driver runs a task that
prints a marker and pushes an error naming it, and an actor call that prints one; the
driver must show all three. Between rounds the leader is killed with SIGKILL and started
again (the next kill needs a majority).
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gcs_ha.testing.ray_nodes import kill_leader, ray_head_command, ray_on_gcs_ha

pytestmark = pytest.mark.slow

HOST = "127.0.0.2"
GCS_PORT, RAFT_PORT = 13000, 13010
ROUND_TIMEOUT_S = 90.0

DRIVER = """
import sys
import ray
from ray._private.utils import push_error_to_driver

ray.init(address=sys.argv[1])
JOB = ray.get_runtime_context().get_job_id()

@ray.remote(num_cpus=0)
def say(marker, job_hex):
    print(f"TASK-{marker}", flush=True)
    push_error_to_driver(
        ray._private.worker.global_worker, "gcs_ha_test", f"ERROR-{marker}",
        job_id=ray.JobID.from_hex(job_hex),
    )
    return marker

@ray.remote(num_cpus=0)
class Speaker:
    def say(self, marker):
        print(f"ACTOR-{marker}", flush=True)
        return marker

speaker = Speaker.remote()
ray.get(speaker.say.remote("warmup"))
print("ready", flush=True)
for line in sys.stdin:
    marker = line.strip()
    ray.get([say.remote(marker, JOB), speaker.say.remote(marker)], timeout=120)
    print(f"DONE-{marker}", flush=True)
"""


class Lines:
    """Every line the driver prints, read by a thread of its own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: [self._queue.put(x) for x in stdout], daemon=True).start()

    def wait_for(self, *needles: str, timeout: float = ROUND_TIMEOUT_S) -> None:
        """Wait until a line containing each of `needles` was printed."""
        deadline = time.monotonic() + timeout
        while not all(any(n in line for line in self.seen) for n in needles):
            left = deadline - time.monotonic()
            missing = [n for n in needles if not any(n in line for line in self.seen)]
            assert left > 0, f"the driver never showed {missing}; it printed {self.seen[-30:]}"
            with contextlib.suppress(queue.Empty):
                self.seen.append(self._queue.get(timeout=min(left, 1.0)))


def test_logs_and_errors_reach_the_driver_across_two_leader_kills(tmp_path: Path) -> None:
    with ray_on_gcs_ha(tmp_path, GCS_PORT, RAFT_PORT, HOST, "ghs-") as c:
        c.ray.start("head", ray_head_command(c.address, c.temp_dir, HOST, 13100))
        driver = c.ray.driver(DRIVER, c.address)
        assert driver.stdin is not None
        lines = Lines(driver)
        lines.wait_for("ready", timeout=180)
        for n in range(3):
            if n:
                kill_leader(c.gcs)
            marker = f"m{n}-{time.monotonic_ns()}"
            driver.stdin.write(marker + "\n")
            driver.stdin.flush()
            lines.wait_for(f"DONE-{marker}", f"TASK-{marker}", f"ACTOR-{marker}")
            lines.wait_for(f"ERROR-{marker}")
        driver.stdin.close()
        assert driver.wait(timeout=60) == 0
        log = (tmp_path / "ray-logs" / "drivers.log").read_text(errors="replace")
        assert "print_logs:" not in log and "listen_error_messages" not in log, log[-3000:]
