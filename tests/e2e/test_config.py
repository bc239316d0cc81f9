"""A cluster set up the way docs/configuration.md shows: one TOML file for
every machine and the operator (peers, cluster name, secret file, Raft timing, the
address the admin commands talk to, `json = true`), each replica's own settings in its
environment (GCS_HA_NODE_ID, GCS_HA_DATA_DIR, ...). Checks that the replicas run with
them (`status` shows the names and addresses from the environment, over the file's
`node-id`; each consensus process logs the timing pysyncobj runs with) and that the
reporting commands print one JSON object: status, transfer-leader, snapshot save, leave,
recover, snapshot restore. Ports: gRPC 127.0.0.1:14100-14102, Raft 14110-14112.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.processes import Process, gcs_ha_command, spawn, terminate_all
from gcs_ha.secret import generate_secret_file
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

GCS, RAFT = 14100, 14110
TIMING_LINE = "election timeout 0.25-0.5 s, heartbeat 0.04 s, leader fallback 1.2 s"


def gcs_ha(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`gcs-ha ARGS` in an environment of the test's own plus `env` (no option variables)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GCS_HA_")}
    return subprocess.run(
        [*gcs_ha_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **env},
    )


def json_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert isinstance(doc, dict)
    return doc


def logged(log: Path, line: str) -> bool | None:
    return line in log.read_text() or None


def replica_env(tmp_path: Path, config: Path, i: int) -> dict[str, str]:
    return {
        "GCS_HA_CONFIG": str(config),
        "GCS_HA_NODE_ID": f"n{i}",
        "GCS_HA_DATA_DIR": str(tmp_path / f"n{i}"),
        "GCS_HA_RAFT_ADDRESS": f"127.0.0.1:{RAFT + i}",
        "GCS_HA_GCS_ADDRESS": f"127.0.0.1:{GCS + i}",
    }


def test_a_cluster_configured_by_file_and_environment_reports_in_json(tmp_path: Path) -> None:
    secret, new_secret = tmp_path / "cluster.secret", tmp_path / "new.secret"
    generate_secret_file(secret)
    generate_secret_file(new_secret)
    peers = ", ".join(f'"127.0.0.1:{RAFT + i}"' for i in range(3))
    config = tmp_path / "gcs-ha.toml"
    config.write_text(
        f'node-id = "overridden"\ncluster-name = "configured"\npeer = [{peers}]\n'
        f'secret-file = "{secret}"\nelection-timeout = "250ms"\nheartbeat = "40ms"\n'
        f'leader-fallback = "1.2s"\naddress = "127.0.0.1:{GCS}"\njson = true\n'
    )
    operator = {"GCS_HA_CONFIG": str(config)}
    logs = [tmp_path / "logs" / f"n{i}.log" for i in range(3)]
    procs: list[Process] = []
    try:
        for i in range(3):
            command = [*gcs_ha_command(), "start"]
            procs.append(spawn(command, logs[i], replica_env(tmp_path, config, i)))

        def healthy() -> dict[str, Any] | None:
            result = gcs_ha("status", env=operator)
            return json.loads(result.stdout) if result.returncode == 0 else None

        status = wait_until(healthy, 60, "the configured cluster never became healthy")
        assert [(m["id"], m["gcs_address"], m["raft_address"]) for m in status["members"]] == [
            (f"n{i}", f"127.0.0.1:{GCS + i}", f"127.0.0.1:{RAFT + i}") for i in range(3)
        ]
        for log in logs:  # each consensus process: what pysyncobj runs with
            wait_until(partial(logged, log, TIMING_LINE), 10, f"{log}: no timing line")

        leader = status["leader"]
        target = next(f"n{i}" for i in range(3) if f"n{i}" != leader)
        assert json_of(gcs_ha("transfer-leader", f"--to={target}", env=operator)) == {
            "leader": target
        }

        backup = tmp_path / "backup.gcsha"
        saved = json_of(gcs_ha("snapshot", "save", str(backup), env=operator))
        assert saved["file"] == str(backup) and saved["cluster_name"] == "configured"
        assert saved["applied_index"] > 0 and backup.stat().st_size > saved["image_length"]

        gone = next(f"n{i}" for i in range(3) if f"n{i}" != target)
        left = json_of(gcs_ha("leave", f"--node-id={gone}", env=operator))
        assert left["node_id"] == gone and left["shut_down"] is True
        assert left["message"] == f"removed {gone} and shut it down"
        assert procs[int(gone[1:])].wait(30) == 0
    finally:
        terminate_all(procs, 10.0)

    survivor = tmp_path / target
    recovered = json_of(gcs_ha("recover", f"--data-dir={survivor}", "--yes", env=operator))
    assert recovered["node_id"] == target and recovered["cluster_name"] == "configured"
    assert len(recovered["removed"]) == 1  # the third member; `gone` had left already

    restore = ["snapshot", "restore", str(backup), f"--data-dir={tmp_path / 'm0'}"]
    restore += ["--node-id=m0", "--cluster-name=restored", f"--secret-file={new_secret}"]
    restored = json_of(gcs_ha(*restore, env=operator))  # the command line wins over the file
    assert (restored["node_id"], restored["cluster_name"]) == ("m0", "restored")
    assert restored["backup"]["applied_index"] == saved["applied_index"]
