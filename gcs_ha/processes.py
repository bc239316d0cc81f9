"""Replica processes: the `gcs-ha start` command line, spawning, and stopping by PID.

Shared by `gcs-ha up` (gcs_ha.up) and the test harness (gcs_ha.testing.cluster), so
both run replicas exactly the way an operator does. Each replica runs in its own
session (a terminal's Ctrl-C reaches only the supervisor, which stops the replicas in
order) with its output appended to its own log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gcs_ha.secret import SECRET_ENV

Process = subprocess.Popen[bytes]


def gcs_ha_command() -> list[str]:
    """How to run the `gcs-ha` CLI of this very installation."""
    return [sys.executable, "-m", "gcs_ha.cli"]


def replica_command(
    *,
    node_id: str,
    data_dir: Path,
    raft_address: str,
    gcs_address: str,
    peers: Sequence[str],
    cluster_name: str,
    secret_file: Path | None,
    log_level: str = "info",
    supervisor_pid: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The `gcs-ha start` command line of one replica."""
    cmd = [
        *gcs_ha_command(),
        "start",
        f"--node-id={node_id}",
        f"--data-dir={data_dir}",
        f"--raft-address={raft_address}",
        f"--gcs-address={gcs_address}",
        f"--cluster-name={cluster_name}",
        f"--log-level={log_level}",
    ]
    cmd += [f"--peer={peer}" for peer in peers]
    cmd += [f"--secret-file={secret_file}"] if secret_file else ["--insecure"]
    if supervisor_pid is not None:
        cmd.append(f"--supervisor-pid={supervisor_pid}")
    return cmd + list(extra)


_withheld = {SECRET_ENV}


def withhold_from_replicas(names: Iterable[str]) -> None:
    """Keep these environment variables of this process from the processes `spawn`
    starts (gcs_ha.cli_config withholds the option variables, GCS_HA_NODE_ID...)."""
    _withheld.update(names)


def spawn(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> Process:
    """Start `cmd` in its own session, stdout and stderr appended to `log_path`; `env`
    is added to this process's environment.

    GCS_HA_SECRET and the variables of `withhold_from_replicas` are removed from its
    environment: replicas started here get their secret from --secret-file only, and
    their settings from `cmd` and `env` (never the option variables or config file of
    `gcs-ha up` or a test that started them).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in _withheld}
    environment.update(env or {})
    environment["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"==== {stamp} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environment,
        )


def signal_process(proc: Process, sig: int) -> None:
    """Send `sig` to `proc` by its PID unless it has already exited."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def signal_replica(proc: Process, sig: int) -> None:
    """Send `sig` to a replica started by `spawn`: to its whole process group (its own
    session), i.e. the front end and its consensus process together, as a machine's
    crash or pause would. Unless the replica has already exited."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # not a group leader: the process alone
            signal_process(proc, sig)


def terminate_all(procs: Sequence[Process], timeout: float) -> list[int]:
    """SIGTERM every running process, SIGKILL those still alive after `timeout` (with
    everything in their process group, as `signal_replica`).

    Returns the exit codes, in order.
    """
    for proc in procs:
        signal_replica(proc, signal.SIGCONT)  # a paused process cannot handle SIGTERM
        signal_process(proc, signal.SIGTERM)
    end = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(0.0, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            signal_replica(proc, signal.SIGKILL)
            codes.append(proc.wait())
    return codes


def describe_exit(code: int) -> str:
    """ "exited with code 3" / "was killed by SIGKILL" / "stopped cleanly"."""
    if code == 0:
        return "stopped cleanly"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"
