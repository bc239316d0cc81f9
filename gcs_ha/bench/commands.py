"""The `gcs-ha bench` commands (click). The measuring modules are imported lazily:
they pull in the consensus layer, which `gcs-ha --help` should not pay for."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from gcs_ha.bench.common import csv_names, measurement_options, run_dir_options, run_repeated
from gcs_ha.errors import GcsHaError
from gcs_ha.progress import for_command, progress_option


def _int_list(_ctx: Any, _param: Any, value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: give one or more integers >= 1")
    return numbers


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s bench %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:  # "stopped serving: replica stopping" at every cluster's end is noise
        logging.getLogger("gcs_ha.consensus.leadership").setLevel(logging.ERROR)


@click.command()
@measurement_options
@click.option(
    "--writers",
    default="1,16,128",
    show_default=True,
    callback=_int_list,
    help="Concurrent writers, comma-separated.",
)
@click.option(
    "--replicas",
    default="1,3",
    show_default=True,
    callback=_int_list,
    help="Replica counts, comma-separated.",
)
@click.option(
    "--lmdb-batch",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="Puts per transaction of the lmdb-batch baseline.",
)
@click.option("--no-lmdb", is_flag=True, help="Skip the raw LMDB baselines.")
@run_dir_options("the data and replica logs")
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=26000,
    show_default=True,
    help="Raft port of r0; r<i> uses BASE+i, its gRPC port BASE+50+i.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@progress_option
def storage(
    *,
    as_json: bool,
    duration: float,
    warmup: float,
    writers: tuple[int, ...],
    replicas: tuple[int, ...],
    value_bytes: int,
    lmdb_batch: int,
    no_lmdb: bool,
    repeat: int,
    data_dir: Path | None,
    keep: bool,
    base_port: int,
    verbose: bool,
    progress: bool | None,
) -> None:
    """Acknowledged writes/s and latency of the replicated store, and raw LMDB on the same
    disk. The leader (r0) runs in this process; the other replicas are `gcs-ha start`
    processes."""
    from gcs_ha.bench.stats import median_points, render_table  # noqa: PLC0415
    from gcs_ha.bench.storage import (  # noqa: PLC0415
        StorageBenchConfig,
        headline,
        point_count,
        run_storage_bench,
    )

    _setup_logging(verbose)
    config = StorageBenchConfig(
        writers=writers,
        replicas=replicas,
        duration_s=duration,
        warmup_s=warmup,
        value_bytes=value_bytes,
        lmdb_batch=lmdb_batch,
        base_port=base_port,
        data_dir=data_dir,
        keep=keep,
        lmdb=not no_lmdb,
    )
    points = point_count(config) * repeat
    bar = for_command(progress, "bench storage", points, unit="points",
                      planned_s=points * (warmup + duration), verbose=verbose)  # fmt: skip
    try:
        with bar as steps:
            runs = [run_storage_bench(config, steps) for _ in range(repeat)]
    except GcsHaError as exc:
        raise click.ClickException(str(exc)) from None
    rows = runs[0] if repeat == 1 else median_points(runs)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(render_table(rows))
        for line in headline(rows):
            click.echo(line)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--kills", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--writers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Writers in the serving replica.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.0),
    default=0.02,
    show_default=True,
    help="Seconds each writer pauses between writes.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds of steady writes before each kill.",
)
@run_dir_options("the data, ack logs and replica logs")
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=26100,
    show_default=True,
    help="Raft port of r0; r<i> uses BASE+i, its gRPC port BASE+50+i.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@progress_option
def failover(
    *,
    as_json: bool,
    kills: int,
    writers: int,
    interval: float,
    settle: float,
    data_dir: Path | None,
    keep: bool,
    base_port: int,
    verbose: bool,
    progress: bool | None,
) -> None:
    """Time from kill -9 of the leader to the first write acknowledged by the new leader,
    over KILLS kills of a 3-replica cluster of separate processes."""
    from gcs_ha.bench.failover import FailoverBenchConfig, render, run_failover_bench  # noqa: PLC0415

    _setup_logging(verbose)
    config = FailoverBenchConfig(
        kills=kills,
        writers=writers,
        interval_s=interval,
        settle_s=settle,
        base_port=base_port,
        data_dir=data_dir,
        keep=keep,
    )
    try:
        with for_command(progress, "bench failover", kills, unit="kills", verbose=verbose) as steps:
            summary = run_failover_bench(config, steps)
    except GcsHaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary, indent=2) if as_json else render(summary))


def _systems(_ctx: Any, _param: Any, value: str) -> tuple[str, ...]:
    from gcs_ha.bench.actors_systems import SYSTEMS  # noqa: PLC0415

    return csv_names(value, SYSTEMS)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows.")
@click.option(
    "--systems",
    default="ray-memory,gcs-ha-3",
    show_default=True,
    callback=_systems,
    help="Systems to measure, comma-separated: ray-memory, gcs-ha-1, gcs-ha-3.",
)
@click.option(
    "--actors",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="Actors created at once (a worker process each); 0 skips.",
)
@click.option(
    "--pgs",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Placement groups created, then removed; 0 skips.",
)
@click.option(
    "--memory-actors",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Pending actors registered before the GCS memory is read; 0 skips.",
)
@click.option(
    "--memory-batch",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Pending actors submitted at a time, each batch waited for; 0 = all at once.",
)
@click.option(
    "--num-cpus",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="The head node's --num-cpus (both systems).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run everything N times and report the median of each field.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=10.0),
    default=900.0,
    show_default=True,
    help="Seconds any one step may take before the run fails.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=35000,
    show_default=True,
    help="Ports BASE..BASE+499: Ray's GCS BASE, gcs-ha gRPC BASE+10+i and Raft BASE+20+i, "
    "the head's Ray ports BASE+100.., worker ports BASE+200..",
)
@run_dir_options("the data and every log")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@progress_option
def actors(
    *,
    as_json: bool,
    systems: tuple[str, ...],
    actors: int,
    pgs: int,
    memory_actors: int,
    memory_batch: int,
    num_cpus: int,
    repeat: int,
    timeout: float,
    base_port: int,
    data_dir: Path | None,
    keep: bool,
    verbose: bool,
    progress: bool | None,
) -> None:
    """Actor creation, placement group create/remove rates and the GCS's memory with
    MEMORY_ACTORS actors registered, through a real Ray cluster: a normal Ray head (its
    own in-memory gcs_server) against gcs-ha replicas with a `gcs-ha ray-head`, each
    started fresh on 127.0.0.5 by this command."""
    from gcs_ha.bench.actors import ActorsBenchConfig, run_actors_bench, step_count  # noqa: PLC0415
    from gcs_ha.bench.actors_report import median_rows, memory_lines, render_table  # noqa: PLC0415

    _setup_logging(verbose)
    config = ActorsBenchConfig(
        systems=systems,
        actors=actors,
        pgs=pgs,
        memory_actors=memory_actors,
        memory_batch=memory_batch,
        num_cpus=num_cpus,
        base_port=base_port,
        timeout_s=timeout,
        data_dir=data_dir,
        keep=keep,
    )
    total = step_count(config) * repeat
    with for_command(progress, "bench actors", total, unit="steps", verbose=verbose) as steps:
        runs = run_repeated(lambda: run_actors_bench(config, steps), repeat)
    rows = runs[0] if repeat == 1 else median_rows(runs)
    click.echo(json.dumps(rows, indent=2) if as_json else render_table(rows))
    for line in memory_lines(rows):
        click.echo(line, err=as_json)
    if any("error" in row for row in rows):
        sys.exit(1)


def _scale_systems(_ctx: Any, _param: Any, value: str) -> tuple[str, ...]:
    from gcs_ha.bench.kv_systems import SYSTEMS  # noqa: PLC0415

    return csv_names(value, SYSTEMS)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows.")
@click.option(
    "--systems",
    default="ray-memory,ray-redis,gcs-ha-3",
    show_default=True,
    callback=_scale_systems,
    help="Systems to measure, comma-separated: ray-memory, ray-redis, gcs-ha-1, gcs-ha-3.",
)
@click.option(
    "--nodes",
    default="50,100,250,500,1000",
    show_default=True,
    callback=_int_list,
    help="Simulated node counts, comma-separated.",
)
@click.option("--actors", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Detached actors created at each point; 0 skips.")  # fmt: skip
@click.option("--pgs", type=click.IntRange(min=0), default=1_000, show_default=True,
              help="One-bundle placement groups created at each point; 0 skips.")  # fmt: skip
@click.option("--probes", type=click.IntRange(min=1), default=20, show_default=True,
              help="View changes timed until GetAllResourceUsage shows them.")  # fmt: skip
@click.option("--settle", type=click.FloatRange(min=0.0), default=15.0, show_default=True,
              help="Seconds of steady state after registration (idle CPU).")  # fmt: skip
@click.option("--no-failover", is_flag=True, help="Skip the kill -9 of the gcs-ha leader.")
@click.option("--nodes-per-channel", type=click.IntRange(min=1), default=10, show_default=True,
              help="Simulated nodes sharing one connection to the GCS.")  # fmt: skip
@click.option(
    "--base-port",
    type=click.IntRange(1024, 65000),
    default=33000,
    show_default=True,
    help="Ray's GCS BASE, Redis BASE+1, gcs-ha gRPC BASE+10+i and Raft BASE+20+i; every "
    "simulated node BASE+100 on its own 127.x.y.z.",
)
@click.option("--ip-prefix", default="127.1", show_default=True,
              help="Simulated node i binds PREFIX.<i//250>.<i%250+1>.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=10.0), default=600.0, show_default=True,
              help="Seconds any one step may take before the point fails.")  # fmt: skip
@run_dir_options("the data and every log")
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
@progress_option
def scale(
    *,
    as_json: bool,
    systems: tuple[str, ...],
    nodes: tuple[int, ...],
    actors: int,
    pgs: int,
    probes: int,
    settle: float,
    no_failover: bool,
    nodes_per_channel: int,
    base_port: int,
    ip_prefix: str,
    timeout: float,
    data_dir: Path | None,
    keep: bool,
    verbose: bool,
    progress: bool | None,
) -> None:
    """Simulated raylets (gcs_ha.testing.raylet_sim) against each system alone, at each
    node count: false node deaths, view propagation, CPU and memory, actor and placement
    group rates, and for gcs-ha a kill -9 of the leader."""
    from gcs_ha.bench.scale import ScaleBenchConfig, render_table, run_scale_bench, step_count  # noqa: PLC0415

    _setup_logging(verbose)
    parts = ip_prefix.split(".")
    if len(parts) != 2 or parts[0] != "127" or not parts[1].isdigit() or int(parts[1]) > 255:
        raise click.BadParameter(f"{ip_prefix!r}: give 127.<0-255>", param_hint="--ip-prefix")
    config = ScaleBenchConfig(
        systems=systems, nodes=nodes, actors=actors, pgs=pgs, probes=probes, settle_s=settle,
        failover=not no_failover, base_port=base_port, ip_prefix=ip_prefix,
        nodes_per_channel=nodes_per_channel, timeout_s=timeout, data_dir=data_dir, keep=keep,
    )  # fmt: skip
    total = step_count(config)
    try:
        with for_command(progress, "bench scale", total, unit="points", verbose=verbose) as steps:
            rows = run_scale_bench(config, steps)
    except GcsHaError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(rows, indent=2) if as_json else render_table(rows))
    if any("error" in row for row in rows):
        sys.exit(1)
