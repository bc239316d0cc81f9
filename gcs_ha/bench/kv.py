"""`gcs-ha bench kv`: InternalKVPut/Get through Ray's own client stubs, gcs-ha against Ray.

Each system (kv_systems) is started fresh and alone; the load generator (kv_client, its
own process) runs every op x client-count point while this process samples the servers'
CPU. Rows: DESIGN.md ("`bench kv`").

Raises ConfigError (a system that cannot run here) and UnavailableError (a server or
the load generator failed; the message names its log).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gcs_ha.bench.common import csv_names, measurement_options, run_dir_options, run_repeated
from gcs_ha.bench.cpu import thread_cpu
from gcs_ha.bench.kv_report import add_ratios, median_rows, ratio_lines, render_table
from gcs_ha.bench.kv_systems import (
    PROFILE_ENV,
    REDIS_FSYNC,
    SYSTEMS,
    THREADS_ENV,
    RunningSystem,
    check_available,
    start_system,
    write_thread_cpu,
)
from gcs_ha.errors import GcsHaError, UnavailableError
from gcs_ha.processes import Process, terminate_all
from gcs_ha.progress import QUIET, Steps, for_command, progress_option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KvBenchConfig:
    """What `gcs-ha bench kv` measures."""

    systems: tuple[str, ...] = SYSTEMS
    clients: tuple[int, ...] = (1, 16, 64)
    ops: tuple[str, ...] = ("put", "get")
    duration_s: float = 5.0
    warmup_s: float = 1.0
    value_bytes: int = 200
    base_port: int = 31000
    redis_fsync: str = "everysec"
    data_dir: Path | None = None
    keep: bool = False


def point_count(config: KvBenchConfig) -> int:
    """How many points (rows) a run measures (`steps` hears of each)."""
    return len(config.systems) * len(config.ops) * len(config.clients)


def run_kv_bench(config: KvBenchConfig, steps: Steps = QUIET) -> list[dict[str, Any]]:
    """Every system, one after the other; returns the rows (ratios added)."""
    check_available(config.systems)
    rows: list[dict[str, Any]] = []
    with _run_dir(config.data_dir, config.keep) as base:
        for system in config.systems:
            steps.begin(f"{system}: starting")
            with start_system(system, base / system, config.base_port, config.redis_fsync) as sut:
                log.info("%s serving at %s", system, sut.address)
                rows += measure(sut, config, base / system, steps)
    return add_ratios(rows)


@contextlib.contextmanager
def _run_dir(parent: Path | None, keep: bool) -> Iterator[Path]:
    """A fresh directory for the run's data and logs, removed afterwards unless `keep`;
    kept (path logged) when a server or the load generator failed, for its logs."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="gcs-ha-bench-kv-", dir=parent))
    failed = False
    try:
        yield base
    except GcsHaError:
        failed = True
        raise
    finally:
        if keep or failed:
            log.warning("benchmark data and logs kept in %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)


def client_command(address: str, config: KvBenchConfig) -> list[str]:
    """The load generator's command line."""
    return [
        sys.executable,
        "-m",
        "gcs_ha.bench.kv_client",
        f"--address={address}",
        f"--ops={','.join(config.ops)}",
        f"--clients={','.join(map(str, config.clients))}",
        f"--duration={config.duration_s}",
        f"--warmup={config.warmup_s}",
        f"--value-bytes={config.value_bytes}",
    ]


def measure(
    sut: RunningSystem, config: KvBenchConfig, base: Path, steps: Steps = QUIET
) -> list[dict[str, Any]]:
    """Run the load generator against `sut`; its points, with the servers' CPU use."""
    log_path = base / "logs" / "kv_client.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(
            client_command(sut.address, config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        rows = _follow(proc, sut, steps)
    finally:
        terminate_all([proc], 5.0)
    if proc.returncode != 0 or len(rows) != len(config.ops) * len(config.clients):
        raise UnavailableError(
            f"{sut.name}: the load generator exited with code {proc.returncode}; see {log_path}"
        )
    return rows


def _follow(proc: Process, sut: RunningSystem, steps: Steps) -> list[dict[str, Any]]:
    """Read the load generator's events until it exits; sample CPU at window edges."""
    rows: list[dict[str, Any]] = []
    cpu_at_start: dict[str, float] = {}
    cpu_s = 0.0
    roles_at = roles_used = {}
    thread_dir = os.environ.get(THREADS_ENV) or os.environ.get(PROFILE_ENV)
    pids = [p.pid for p in sut.procs.values()]
    for event in _events(proc, sut):
        kind = event.pop("event")
        if kind == "window_start":
            clients = event["clients"]
            steps.begin(f"{sut.name}: {event['op']}, {clients} client{'s' * (clients != 1)}")
            cpu_at_start = thread_cpu(pids)
            roles_at = sut.roles.sample() if sut.roles else {}
        elif kind == "window_end":
            used = {t: s - cpu_at_start.get(t, 0.0) for t, s in thread_cpu(pids).items()}
            cpu_s = sum(used.values())
            roles_used = sut.roles.sample() if sut.roles else {}
            if thread_dir:
                write_thread_cpu(Path(thread_dir), sut, event, used)
        elif kind == "point":
            row = _row(sut.name, event, cpu_s)
            if sut.roles:
                row.update(sut.roles.per_op(roles_at, roles_used, event["ops"]))
            rows.append(row)
            log.info("%s", row)
            steps.advance()
    return rows


def _events(proc: Process, sut: RunningSystem) -> Iterator[dict[str, Any]]:
    """The load generator's JSON lines; UnavailableError if a server process exits."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if selector.select(timeout=0.5):
                line = proc.stdout.readline()
                if not line:
                    proc.wait()
                    return
                try:
                    yield json.loads(line)
                except ValueError:
                    log.warning("load generator printed %r", line[:200])
            sut.check_alive()


def _row(system: str, point: dict[str, Any], server_cpu_s: float) -> dict[str, Any]:
    seconds = point["seconds"]
    return {
        "system": system,
        **point,
        "server_cores": round(server_cpu_s / seconds, 3),
        "server_cpu_ms_per_op": (
            round(server_cpu_s * 1000.0 / point["ops"], 4) if point["ops"] else None
        ),
    }


def _csv_ints(_ctx: Any, _param: Any, value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: give one or more integers >= 1")
    return numbers


def _csv_choice(choices: Sequence[str]) -> Any:
    def parse(_ctx: Any, _param: Any, value: str) -> tuple[str, ...]:
        return csv_names(value, choices)

    return parse


@click.command()
@measurement_options
@click.option(
    "--clients",
    default="1,16,64",
    show_default=True,
    callback=_csv_ints,
    help="Concurrent clients, comma-separated.",
)
@click.option(
    "--systems",
    default=",".join(SYSTEMS),
    show_default=True,
    callback=_csv_choice(SYSTEMS),
    help="Systems to measure, comma-separated.",
)
@click.option(
    "--ops",
    default="put,get",
    show_default=True,
    callback=_csv_choice(("put", "get")),
    help="InternalKV calls to measure.",
)
@click.option(
    "--redis-fsync",
    type=click.Choice(REDIS_FSYNC),
    default="everysec",
    show_default=True,
    help="ray-redis: Redis AOF fsync policy (none = AOF off).",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=31000,
    show_default=True,
    help="Ray GCS BASE, Redis BASE+1, gcs-ha gRPC BASE+10+i, Raft BASE+20+i.",
)
@run_dir_options("the data and server logs")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@progress_option
def kv(
    *,
    as_json: bool,
    duration: float,
    warmup: float,
    clients: tuple[int, ...],
    systems: tuple[str, ...],
    ops: tuple[str, ...],
    value_bytes: int,
    repeat: int,
    redis_fsync: str,
    base_port: int,
    data_dir: Path | None,
    keep: bool,
    verbose: bool,
    progress: bool | None,
) -> None:
    """InternalKVPut/Get through Ray's own client stubs: Ray's gcs_server (in memory, on
    Redis) against gcs-ha with 1 and 3 durable replicas, all started by this command.
    Set GCS_HA_BENCH_THREADS=DIR to record each server thread's CPU time per point, and
    GCS_HA_BENCH_PROFILE=DIR to do that and run the gcs-ha replicas under cProfile."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s bench %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = KvBenchConfig(
        systems=systems,
        clients=clients,
        ops=ops,
        duration_s=duration,
        warmup_s=warmup,
        value_bytes=value_bytes,
        base_port=base_port,
        redis_fsync=redis_fsync,
        data_dir=data_dir,
        keep=keep,
    )
    points = point_count(config) * repeat
    bar = for_command(progress, "bench kv", points, unit="points",
                      planned_s=points * (warmup + duration), verbose=verbose)  # fmt: skip
    with bar as steps:
        runs = run_repeated(lambda: run_kv_bench(config, steps), repeat)
    rows = runs[0] if repeat == 1 else add_ratios(median_rows(runs))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_table(rows))
    for line in ratio_lines(rows):
        click.echo(line, err=as_json)
