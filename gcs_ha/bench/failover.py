"""`gcs-ha bench failover`: time from kill -9 of the leader to the first write
acknowledged by the new leader.

Three replicas run gcs_ha.bench.runner; the mechanism is in DESIGN.md ("Mechanism").

Raises UnavailableError when the cluster does not settle or a runner exits on its own
(its log is named in the message).
"""

from __future__ import annotations

import logging
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gcs_ha import table
from gcs_ha.admin_client import AdminClient
from gcs_ha.bench.common import CLUSTER_NAME, GCS_PORT_OFFSET, HOST, ProcessSet, run_dir
from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.processes import Process, spawn
from gcs_ha.progress import QUIET, Steps
from gcs_ha.proto import admin_pb2
from gcs_ha.secret import generate_secret_file

log = logging.getLogger(__name__)

T = TypeVar("T")
REPLICAS = 3
SETTLE_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 20.0
CATCH_UP_SLACK = 50  # entries a follower may lag behind the leader's commit and count as caught up


@dataclass(frozen=True)
class FailoverBenchConfig:
    """What `gcs-ha bench failover` does."""

    kills: int = 10
    writers: int = 4
    interval_s: float = 0.02
    settle_s: float = 1.0
    base_port: int = 26100
    data_dir: Path | None = None
    keep: bool = False


@dataclass
class KillResult:
    """One kill of the leader and what followed."""

    killed: str
    new_leader: str | None
    serving_s: float | None  # kill -> the new leader serves (barrier applied)
    first_ack_s: float | None  # kill -> first write acknowledged by the new leader
    term: int | None


@dataclass
class _Runners:
    """The three runner processes and where their files are."""

    base: Path
    base_port: int
    config: FailoverBenchConfig
    procs: ProcessSet
    running: dict[int, Process] = field(default_factory=dict)

    def node_id(self, i: int) -> str:
        return f"r{i}"

    def raft_address(self, i: int) -> str:
        return f"{HOST}:{self.base_port + i}"

    def gcs_address(self, i: int) -> str:
        return f"{HOST}:{self.base_port + GCS_PORT_OFFSET + i}"

    def ack_log(self, i: int) -> Path:
        return self.base / "acks" / f"r{i}.log"

    def log_path(self, i: int) -> Path:
        return self.base / "logs" / f"r{i}.log"

    def start(self, i: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "gcs_ha.bench.runner",
            f"--node-id={self.node_id(i)}",
            f"--data-dir={self.base / self.node_id(i)}",
            f"--raft-address={self.raft_address(i)}",
            f"--gcs-address={self.gcs_address(i)}",
            f"--secret-file={self.base / 'cluster.secret'}",
            f"--cluster-name={CLUSTER_NAME}",
            f"--ack-log={self.ack_log(i)}",
            f"--writers={self.config.writers}",
            f"--interval={self.config.interval_s}",
        ]
        cmd += [f"--peer={self.raft_address(j)}" for j in range(REPLICAS) if j != i]
        self.running[i] = self.procs.add(spawn(cmd, self.log_path(i)))

    def check_alive(self) -> None:
        for i, proc in self.running.items():
            if proc.poll() is not None:
                raise UnavailableError(
                    f"runner r{i} exited with code {proc.returncode}; see {self.log_path(i)}"
                )

    def status(self, i: int) -> admin_pb2.ReplicaStatus | None:
        try:
            with AdminClient(self.gcs_address(i), timeout=1.0) as client:
                return client.status()
        except GcsHaError:
            return None


def run_failover_bench(config: FailoverBenchConfig, steps: Steps = QUIET) -> dict[str, Any]:
    """Kill the leader `config.kills` times; returns per-kill results and their summary.
    `steps` hears of each kill."""
    procs = ProcessSet()
    with run_dir(config.data_dir, config.keep) as base:
        try:
            (base / "acks").mkdir()
            generate_secret_file(base / "cluster.secret")
            runners = _Runners(base, config.base_port, config, procs)
            for i in range(REPLICAS):
                runners.start(i)
            results = []
            for k in range(config.kills):
                steps.begin(f"kill {k + 1}: waiting for a steady cluster")
                results.append(_one_kill(runners, config))
                steps.advance()
            return summarize(results)
        finally:
            procs.close()


def _one_kill(runners: _Runners, config: FailoverBenchConfig) -> KillResult:
    leader = _wait_steady(runners)
    time.sleep(config.settle_s)
    leader = _wait_steady(runners)
    survivors = [i for i in range(REPLICAS) if i != leader]
    offsets = {i: _size(runners.ack_log(i)) for i in survivors}
    proc = runners.running.pop(leader)
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    result = _wait_first_ack(runners, leader, survivors, offsets, killed_at)
    log.info("%s", result)
    runners.start(leader)
    return result


def _wait_steady(runners: _Runners) -> int:
    """The index of the serving leader, once its writes flow and every replica caught up."""

    def probe() -> int | None:
        runners.check_alive()
        statuses = {i: runners.status(i) for i in runners.running}
        serving = [i for i, s in statuses.items() if s is not None and s.serving]
        if len(serving) != 1 or any(s is None for s in statuses.values()):
            return None
        leader = serving[0]
        commit = statuses[leader].commit_index  # type: ignore[union-attr]
        behind = [s for s in statuses.values() if s and s.applied_index + CATCH_UP_SLACK < commit]
        fresh = _last_ack(runners.ack_log(leader))
        if behind or fresh is None or time.monotonic() - fresh > 0.5:
            return None
        return leader

    return _poll(probe, SETTLE_TIMEOUT_S, "the cluster did not settle with a writing leader")


def _wait_first_ack(
    runners: _Runners,
    killed: int,
    survivors: list[int],
    offsets: dict[int, int],
    killed_at: float,
) -> KillResult:
    def probe() -> KillResult | None:
        runners.check_alive()
        for i in survivors:
            events = _events_after(runners.ack_log(i), offsets[i], killed_at)
            acks = [(t, term) for kind, term, t in events if kind == "ack"]
            if acks:
                serving = [t for kind, _, t in events if kind == "serving"]
                first, term = min(acks)
                return KillResult(
                    killed=runners.node_id(killed),
                    new_leader=runners.node_id(i),
                    serving_s=min(serving) - killed_at if serving else None,
                    first_ack_s=first - killed_at,
                    term=term,
                )
        return None

    try:
        return _poll(probe, ACK_TIMEOUT_S, "no write was acknowledged after the kill")
    except UnavailableError:
        log.warning("no new leader acknowledged a write within %.0f s", ACK_TIMEOUT_S)
        return KillResult(runners.node_id(killed), None, None, None, None)


def _poll(probe: Callable[[], T | None], timeout: float, what: str, every: float = 0.01) -> T:
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > end:
            raise UnavailableError(f"{what} within {timeout:.0f} s")
        time.sleep(every)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _events_after(path: Path, offset: int, after: float) -> list[tuple[str, int, float]]:
    """(kind, term, t) of the complete lines from byte `offset` on with t > `after`.

    `offset` may fall inside a line: that partial line is skipped."""
    try:
        with open(path, "rb") as f:
            if offset > 0:
                f.seek(offset - 1)
                data = f.read()
                data = data[data.index(b"\n") + 1 :] if b"\n" in data else b""
            else:
                data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:  # the last piece is empty or still being written
        kind, term, t = line.decode().split()
        if float(t) > after:
            out.append((kind, int(term), float(t)))
    return out


def _last_ack(path: Path) -> float | None:
    """Timestamp of the last ack line of the file, reading only its tail."""
    events = _events_after(path, max(0, _size(path) - 4096), 0.0)
    acks = [t for kind, _, t in events if kind == "ack"]
    return acks[-1] if acks else None


def summarize(results: list[KillResult]) -> dict[str, Any]:
    """Per-kill results plus median/min/max of each duration."""

    def stats(values: list[float | None]) -> dict[str, float] | None:
        done = [v for v in values if v is not None]
        if not done:
            return None
        return {
            "median": round(statistics.median(done), 4),
            "min": round(min(done), 4),
            "max": round(max(done), 4),
        }

    return {
        "kills": len(results),
        "failed": sum(1 for r in results if r.first_ack_s is None),
        "first_ack_s": stats([r.first_ack_s for r in results]),
        "new_leader_serving_s": stats([r.serving_s for r in results]),
        "results": [
            {
                "killed": r.killed,
                "new_leader": r.new_leader,
                "first_ack_s": None if r.first_ack_s is None else round(r.first_ack_s, 4),
                "serving_s": None if r.serving_s is None else round(r.serving_s, 4),
                "term": r.term,
            }
            for r in results
        ],
    }


def render(summary: dict[str, Any]) -> str:
    """The human-readable report of `gcs-ha bench failover`."""
    header = ("KILL", "KILLED", "NEW LEADER", "TERM", "SERVING S", "FIRST ACK S")
    rows = [
        (n, r["killed"], r["new_leader"], r["term"], _fmt(r["serving_s"]), _fmt(r["first_ack_s"]))
        for n, r in enumerate(summary["results"], 1)
    ]
    lines = [table.render_table(rows, header=header, left=0)]
    for key, label in (("first_ack_s", "first ack"), ("new_leader_serving_s", "serving")):
        s = summary[key]
        if s:
            lines.append(
                f"{label}: median {s['median']:.3f} s, min {s['min']:.3f} s, max {s['max']:.3f} s"
            )
    if summary["failed"]:
        lines.append(f"{summary['failed']} kill(s) without an acknowledged write in time")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
