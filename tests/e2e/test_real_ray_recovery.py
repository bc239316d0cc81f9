"""Issue 13's recoveries with real Ray (release suite: a few minutes).

- Backup and restore: a Ray head on gcs-ha-3 creates a detached actor and runs a job;
  `gcs-ha snapshot save` takes a backup; every replica and Ray process is destroyed; the
  backup is restored into a new 3-replica cluster (new name, new secret), and a driver of
  a new Ray head started on it sees the detached actor's and the job's records.
- Lost quorum: a head and a worker node wait (RAY_gcs_rpc_server_reconnect_timeout_s
  raised) while two replicas are destroyed for good and `gcs-ha recover` turns the third,
  the one Ray was given, into a cluster of one: both raylets reconnect with their node ids
  and run tasks again.

Real processes on 127.0.0.2: gcs-ha 18500-18552, Ray 18600-18999.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gcs_ha.secret import generate_secret_file
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until
from gcs_ha.testing.ray_nodes import (
    RayProcesses,
    last_json,
    port_options,
    ray_head_command,
    ray_on_gcs_ha,
    ray_worker,
)
from gcs_ha.testing.sessions import alive

pytestmark = [pytest.mark.slow, pytest.mark.release]

HOST = "127.0.0.2"
WAIT_ENV = {"RAY_gcs_rpc_server_reconnect_timeout_s": "180"}

CREATE = """
import json, sys, ray
ray.init(address=sys.argv[1], namespace="keep")

@ray.remote(num_cpus=0)
class Keeper:
    def ping(self):
        return "pong"

keeper = Keeper.options(name="keeper", lifetime="detached").remote()
assert ray.get(keeper.ping.remote()) == "pong"
print(json.dumps({"job": ray.get_runtime_context().get_job_id(),
                  "actor": keeper._actor_id.hex()}))
"""

RECORDS = """
import json, sys, ray
ray.init(address=sys.argv[1])
actors = ray._private.state.actors()
jobs = ray._private.state.jobs()
print(json.dumps({"actors": {a: v.get("Name", "") for a, v in actors.items()},
                  "jobs": [j["JobID"] for j in jobs]}))
"""

NODES = """
import json, sys, ray
ray.init(address=sys.argv[1])

@ray.remote(num_cpus=0)
def where():
    return ray.get_runtime_context().get_node_id()

ray.get([where.remote() for _ in range(4)], timeout=120)
print(json.dumps({"alive": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])}))
"""


def gcs_ha(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gcs_ha.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_a_restored_cluster_keeps_rays_detached_actors_and_jobs(tmp_path: Path) -> None:
    backup = tmp_path / "backup.gcsha"
    with ray_on_gcs_ha(tmp_path / "old", 18500, 18510, HOST, "grb-") as c:
        c.ray.start("head", ray_head_command(c.address, c.temp_dir, HOST, 18600))
        made = last_json(c.ray.driver(CREATE, c.address))
        assert c.gcs.secret_file is not None
        saved = gcs_ha(
            "snapshot", "save", str(backup), "--address", c.address,
            "--secret-file", str(c.gcs.secret_file),
        )  # fmt: skip
        assert saved.returncode == 0, saved.stderr
        c.ray.close()
        for i in range(3):
            c.gcs.kill(i)
            shutil.rmtree(c.gcs.data_dir(i))

    new = tmp_path / "new"
    new.mkdir()
    generate_secret_file(new / "cluster.secret")
    for i in range(3):
        restored = gcs_ha(
            "snapshot", "restore", str(backup), "--data-dir", str(new / f"r{i}"),
            "--node-id", f"r{i}", "--cluster-name", "restored",
            "--secret-file", str(new / "cluster.secret"),
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
    ray = RayProcesses(tmp_path / "ray-logs-new")
    temp_dir = tempfile.mkdtemp(prefix="grn-", dir="/tmp")  # Ray's sockets: short paths
    with ProcessCluster(3, new, 18520, 18530, host=HOST, cluster_name="restored") as gcs:
        try:
            gcs.start()
            address = gcs.gcs_address(gcs.wait_for_leader(60))
            ray.start("head", ray_head_command(address, temp_dir, HOST, 18600))
            records = last_json(ray.driver(RECORDS, address))
        finally:
            ray.close()
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert records["actors"].get(made["actor"]) == "keeper"
    assert made["job"] in records["jobs"]


def test_raylets_wait_out_a_lost_quorum_and_keep_their_node_ids(tmp_path: Path) -> None:
    with ray_on_gcs_ha(tmp_path, 18540, 18550, HOST, "grq-") as c:
        c.ray.env = WAIT_ENV
        head = c.ray.start("head", ray_head_command(c.address, c.temp_dir, HOST, 18600))
        node = ["--num-cpus=1", f"--temp-dir={c.temp_dir}"]
        node += [f"--node-ip-address={HOST}", *port_options(18800, range(18900, 19000))]
        worker = c.ray.start("worker", ray_worker(c.address, *node))
        before = last_json(c.ray.driver(NODES, c.address))["alive"]
        assert before == sorted([head.node_id, worker.node_id])

        survivor = int(c.address.rsplit(":", 1)[1]) - 18540  # the replica Ray was given
        leader = c.gcs.wait_for_leader(60)

        def caught_up() -> bool:
            return c.gcs.status(survivor).applied_index >= c.gcs.status(leader).commit_index

        wait_until(caught_up, 30, "the survivor never caught up")
        for i in range(3):
            c.gcs.kill(i)
            if i != survivor:
                shutil.rmtree(c.gcs.data_dir(i))
        done = wait_until(
            lambda: (
                out
                if (
                    out := gcs_ha("recover", "--data-dir", str(c.gcs.data_dir(survivor)), "--yes")
                ).returncode
                == 0
                or "in use" not in out.stderr
                else None
            ),
            10,
            "the data dir stayed locked",
        )
        assert done.returncode == 0, done.stderr
        c.gcs.members = {survivor}
        c.gcs.start(survivor)
        c.gcs.wait_for_leader(60)
        after = last_json(c.ray.driver(NODES, c.address))["alive"]
        assert after == before
        for started in (head, worker):  # the same raylet processes, never restarted
            assert alive(started.raylet_pid), f"the {started.name}'s raylet is gone"
