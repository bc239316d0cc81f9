"""`gcs-ha bench actors`: actor and placement group rates through a real Ray cluster, and
the GCS's memory with many actors registered, gcs-ha against Ray's own gcs_server.

Each system (actors_systems) is started fresh and alone; one driver process
(actors_driver, which imports Ray) runs the steps against it. Steps and rows: DESIGN.md
("`bench actors`").

Raises ConfigError (a system or an option that cannot run here) and UnavailableError
(a process failed; the message names its log).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcs_ha.bench.actors_memory import MemoryProbe
from gcs_ha.bench.actors_report import add_ratios
from gcs_ha.bench.actors_systems import (
    HOST,
    PORT_SPAN,
    RAY_ENV,
    SYSTEMS,
    WORKER_PORTS,
    ActorSystem,
    ray_cli,
    start_system,
)
from gcs_ha.errors import ConfigError, UnavailableError
from gcs_ha.processes import Process
from gcs_ha.progress import QUIET, Steps
from gcs_ha.testing.sessions import kill_sessions

log = logging.getLogger(__name__)

ACTOR_CPU, BUNDLE_CPU = 0.01, 0.001  # as in actors_driver (which cannot be imported here)


@dataclass(frozen=True)
class ActorsBenchConfig:
    """What `gcs-ha bench actors` measures."""

    systems: tuple[str, ...] = ("ray-memory", "gcs-ha-3")
    actors: int = 40
    pgs: int = 500
    memory_actors: int = 10_000
    memory_batch: int = 500
    num_cpus: int = 2
    base_port: int = 35000
    timeout_s: float = 900.0
    data_dir: Path | None = None
    keep: bool = False

    def check(self) -> None:
        """ConfigError for what cannot run, before anything starts."""
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown or not self.systems:
            raise ConfigError(f"unknown systems {unknown}: choose from {', '.join(SYSTEMS)}")
        if self.actors * ACTOR_CPU > self.num_cpus:
            raise ConfigError(f"{self.actors} actors of {ACTOR_CPU} CPU exceed {self.num_cpus}")
        if self.actors > WORKER_PORTS - 50:  # each actor a worker with a port; spares
            raise ConfigError(f"at most {WORKER_PORTS - 50} actors (worker ports)")
        if self.pgs * BUNDLE_CPU > self.num_cpus:
            raise ConfigError(f"{self.pgs} bundles of {BUNDLE_CPU} CPU exceed {self.num_cpus}")
        if self.base_port + PORT_SPAN > 65536:
            raise ConfigError(f"--base-port {self.base_port}: needs {PORT_SPAN} ports above it")
        ray_cli()

    def expected_ops(self) -> list[str]:
        ops = ["actors", "actors_kill"] if self.actors else []
        ops += ["pgs_create", "pgs_remove"] if self.pgs else []
        return ops + (["register", "memory"] if self.memory_actors else [])


def step_count(config: ActorsBenchConfig) -> int:
    """How many steps (rows) a run measures (`steps` hears of each)."""
    return len(config.systems) * len(config.expected_ops())


def run_actors_bench(config: ActorsBenchConfig, steps: Steps = QUIET) -> list[dict[str, Any]]:
    """Every system, one after the other; returns the rows (ratios added)."""
    config.check()
    rows: list[dict[str, Any]] = []
    with _run_dirs(config.data_dir, config.keep) as (base, temp, failed):
        for name in config.systems:
            steps.begin(f"{name}: starting")
            with start_system(name, base / name, config.base_port, config.num_cpus, temp) as sut:
                log.info("%s up, GCS at %s", name, sut.address)
                measured = measure(sut, config, base / name, steps)
            steps.advance(len(config.expected_ops()) - len(measured))  # the steps a failure skipped
            rows += measured
            failed += [row for row in measured if "error" in row]
    return add_ratios(rows)


@contextlib.contextmanager
def _run_dirs(parent: Path | None, keep: bool) -> Iterator[tuple[Path, Path, list[dict[str, Any]]]]:
    """A fresh directory for the run's data and logs (under `parent`, default the temp
    dir), Ray's --temp-dir (short, its Unix socket paths must fit in 107 bytes, so
    always under /tmp), and a list for failed rows. Both are removed afterwards unless
    `keep`, an error, or a failed row (then their paths are logged)."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="gcs-ha-bench-actors-", dir=parent))
    temp = Path(tempfile.mkdtemp(prefix="gha-ba-", dir="/tmp"))
    failed: list[dict[str, Any]] = []
    crashed = False
    try:
        yield base, temp, failed
    except Exception:
        crashed = True
        raise
    finally:
        if keep or crashed or failed:
            log.warning("benchmark data and logs kept in %s, Ray's session logs in %s", base, temp)
        else:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(temp, ignore_errors=True)


def driver_command(address: str, config: ActorsBenchConfig) -> list[str]:
    """The driver's command line."""
    return [
        sys.executable,
        "-m",
        "gcs_ha.bench.actors_driver",
        f"--address={address}",
        f"--node-ip={HOST}",
        f"--actors={config.actors}",
        f"--pgs={config.pgs}",
        f"--memory-actors={config.memory_actors}",
    ]


def measure(
    sut: ActorSystem, config: ActorsBenchConfig, base: Path, steps: Steps = QUIET
) -> list[dict[str, Any]]:
    """Run the driver against `sut`; its rows, with the memory ones taken here."""
    log_path = base / "logs" / "driver.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(
            driver_command(sut.address, config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            env={**os.environ, **RAY_ENV},
        )
    try:
        rows = _follow(proc, sut, config, log_path, steps)
    finally:
        kill_sessions([proc.pid])
        proc.wait()
    ops, expected = [row["op"] for row in rows], config.expected_ops()
    failed = bool(rows) and "error" in rows[-1] and ops == expected[: len(ops)]
    if ops != expected and not failed:
        raise UnavailableError(f"{sut.name}: the driver stopped after {ops}; see {log_path}")
    return rows


def _follow(
    proc: Process, sut: ActorSystem, config: ActorsBenchConfig, log_path: Path, steps: Steps
) -> list[dict[str, Any]]:
    """React to the driver's events until it says `done` (or exits). For gcs-ha, each
    row also gets `elections` and its CPU per op by replica role (`_StepMeter`)."""
    assert proc.stdin is not None
    rows: list[dict[str, Any]] = []
    probe: MemoryProbe | None = None
    meter = _StepMeter(sut)
    for event in _events(proc, sut, config.timeout_s):
        kind = event.pop("event")
        new: list[dict[str, Any]] = []
        if kind == "ready":
            meter.restart()
            _begin_next(steps, sut.name, config, 0)
        elif kind == "result":
            new = [_rate_row(sut.name, event)]
        elif kind == "memory_ready":
            probe = MemoryProbe.begin(
                sut,
                event["job_id"],
                count=config.memory_actors,
                batch=config.memory_batch,
                timeout_s=config.timeout_s,
                log_path=log_path,
            )
            meter.restart()
            _tell(proc, f"go {config.memory_batch or config.memory_actors}")
        elif kind == "memory_submitted" and probe is not None:
            steps.begin(f"{sut.name}: register, {event['count']:,} of {config.memory_actors:,}")
            try:
                new = _memory_step(proc, probe, event, config)
            except UnavailableError as exc:  # record it, go on with the next system
                log.error("%s", exc)
                new = [probe.failed_row(str(exc))]
        if kind == "done":
            break
        meter.annotate(new)
        for row in new:
            log.info("%s", row)
        rows += new
        steps.advance(len(new))
        if new and "error" in new[-1]:
            break
        if new:
            _begin_next(steps, sut.name, config, len(rows))
    return rows


def _begin_next(steps: Steps, system: str, config: ActorsBenchConfig, done: int) -> None:
    ops = config.expected_ops()
    if done < len(ops):
        steps.begin(f"{system}: {ops[done]}")


class _StepMeter:
    """gcs-ha only: how much the Raft term grew during a step (`elections`; 0 when the
    leader held), and the CPU of each replica role since the previous step, per actor or
    group of the step (gcs_ha.bench.cpu)."""

    def __init__(self, sut: ActorSystem) -> None:
        self._sut = sut
        self._term: int | None = None
        self._cpu: dict[str, float] = {}
        self.restart()

    def restart(self) -> None:
        self._term = self._sut.term()
        self._cpu = self._sut.roles.sample() if self._sut.roles else {}

    def annotate(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._term is not None:
            now = self._sut.term()
            for row in rows:
                row["elections"] = None if now is None else now - self._term
            self._term = now
        if self._sut.roles:
            cpu = self._sut.roles.sample()
            rows[0].update(self._sut.roles.per_op(self._cpu, cpu, rows[0]["count"]))
            self._cpu = cpu


def _memory_step(
    proc: Process, probe: MemoryProbe, event: dict[str, Any], config: ActorsBenchConfig
) -> list[dict[str, Any]]:
    """A batch was submitted: wait for the GCS to have it, then ask for the next one, or
    (after the last) take the memory rows and let the driver go."""
    assert proc.stdin is not None
    probe.wait_registered(event["count"])
    if event["count"] < config.memory_actors:
        _tell(proc, f"go {config.memory_batch}")
        return []
    rows = probe.finish(event["t0"])
    proc.stdin.close()
    return rows


def _tell(proc: Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()


def _events(proc: Process, sut: ActorSystem, idle_timeout_s: float) -> Iterator[dict[str, Any]]:
    """The driver's JSON lines (other output is skipped); UnavailableError when a
    server process exits or the driver says nothing for `idle_timeout_s`."""
    assert proc.stdout is not None
    fd, buffer = proc.stdout.fileno(), b""
    last = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.startswith(b"{"):
                    yield json.loads(line)
                    last = time.monotonic()
            if selector.select(timeout=0.5):
                chunk = os.read(fd, 65536)  # not proc.stdout.read: its buffer hides lines
                if not chunk:
                    return
                buffer += chunk
            sut.check_alive()
            if time.monotonic() - last > idle_timeout_s:
                raise UnavailableError(f"{sut.name}: the driver was silent {idle_timeout_s:.0f} s")


def _rate_row(system: str, event: dict[str, Any]) -> dict[str, Any]:
    op, count, seconds = event["op"], event["count"], event["seconds"]
    unit = "pgs_per_s" if op.startswith("pgs") else "actors_per_s"
    rate = round(count / seconds, 2) if seconds > 0 else 0.0
    return {"system": system, "op": op, "count": count, "seconds": seconds, unit: rate}
