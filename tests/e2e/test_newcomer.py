"""The newcomer's path, with defaults only: `gcs-ha up`, then `gcs-ha ray-head --address
<what up printed>`, then `ray start --address=<what the head printed>`, `ray.init()` and
`ray status`, none of them with an extra flag; and `gcs-ha ray-head` refusing, with a
message saying why, an address where Ray would find nothing.

Ray rewrites 127.0.0.1 in a GCS address to the machine's IP, so this path goes through
that IP. Tests may not use the machine's real addresses, so the test runs in a network
and mount namespace of its own (`unshare -n -m`): loopback, plus 10.203.0.2 on it with a
default route, which Ray (and gcs-ha) then take for the machine's IP; /tmp/ray, Ray's
default temp dir, is a private tmpfs there. The outer test starts the inner one there;
without root, `unshare` and `ip` it is skipped. Ports: the defaults (6379..., Ray's own),
private to the namespace.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcs_ha.processes import gcs_ha_command, terminate_all
from gcs_ha.ray_head import ray_address
from gcs_ha.testing import namespaces
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import RAY_ENV, RayProcesses, last_json, venv_cli

INSIDE = "GCS_HA_NEWCOMER_INSIDE"
MACHINE_IP = "10.203.0.2"
SETUP = [
    namespaces.LOOPBACK_UP,
    f"ip addr add {MACHINE_IP}/32 dev lo",
    f"ip route add default dev lo src {MACHINE_IP}",
    "mkdir -p /tmp/ray",
    "mount -t tmpfs tmpfs /tmp/ray",
]
DRIVER = """
import json
import ray
ray.init()
@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()
nodes = [n for n in ray.nodes() if n["Alive"]]
ran = set(ray.get([where.remote() for _ in range(20)], timeout=120))
print(json.dumps({"nodes": len(nodes), "ran_on": len(ran)}))
"""


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`gcs-ha up` with no options, in an empty directory (inside the namespaces only)."""
    if not os.environ.get(INSIDE):
        pytest.skip("runs in a namespace of its own (test_newcomer_path)")
    out = tmp_path / "up.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [*gcs_ha_command(), "up"], cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield proc, out
    finally:
        terminate_all([proc], 30.0)


def printed(path: Path, pattern: str, timeout: float = 90.0) -> str:
    """The first group of `pattern` in the file, once it is there."""

    def found() -> str | None:
        match = re.search(pattern, path.read_text(errors="replace"))
        return match.group(1) if match else None

    return wait_until(found, timeout, f"{pattern!r} not printed in {path}")


def test_newcomer_path_inside(up: tuple[subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    """The inner test (see the module doc)."""
    _, up_out = up
    address = printed(up_out, r"gcs-ha ray-head --address (\S+) ")
    assert address == f"{MACHINE_IP}:6379", up_out.read_text()
    printed(up_out, r"leader: (r\d)")
    assert ray_address("127.0.0.1:6379") == address  # what Ray makes of the usual address
    wrong = subprocess.run(
        [*gcs_ha_command(), "ray-head", "--address=127.0.0.1:6390"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2, wrong.stderr
    assert f"Ray rewrites 127.0.0.1:6390 to {MACHINE_IP}:6390" in wrong.stderr
    ray = RayProcesses(tmp_path / "ray-logs")
    try:
        head = ray.start("head", [*gcs_ha_command(), "ray-head", f"--address={address}"])
        hint = re.search(r"ray start --address='([^']+)'", head.output)
        assert hint is not None, head.output
        ray.start("node1", venv_cli("ray", "start", f"--address={hint.group(1)}"))
        out = last_json(ray.driver(DRIVER), 300)
        assert out["nodes"] == 2 and out["ran_on"] >= 1, out
        # `ray status` shows the autoscaler's last report, made every few seconds: the
        # second node may not be in it yet.
        wait_until(
            lambda: True if ray_status_nodes() >= 2 else None, 60, "ray status lacks a node"
        )
    finally:
        ray.close()


def ray_status_nodes() -> int:
    """How many nodes `ray status` lists (it must succeed)."""
    status = subprocess.run(
        venv_cli("ray", "status"), capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **RAY_ENV},
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    return status.stdout.count("node_")


@pytest.mark.slow
def test_newcomer_path(tmp_path: Path) -> None:
    if os.environ.get(INSIDE):
        pytest.skip("already inside")
    if (why := namespaces.missing()) is not None:
        pytest.skip(why)
    inner = f"{Path(__file__)}::test_newcomer_path_inside"
    proc = namespaces.run_test_inside(inner, INSIDE, tmp_path / "inner", SETUP, mount=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout, proc.stdout[-3000:]
