"""`gcs-ha drill`: faults under load on a local cluster, every history checked.

The drill modules are imported when the command runs (they pull in the consensus layer,
which `gcs-ha --help` should not pay for). Exit code 0 when every check passed, 1 when
one failed (the report says which), 2 for bad options.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gcs_ha.drill.faults import FAULT_KINDS
from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.progress import for_command, progress_option
from gcs_ha.secret import load_admin_key

if TYPE_CHECKING:
    from gcs_ha.drill.runner import DrillConfig
    from gcs_ha.progress_bar import WorkProgress


def _admin_key(address: str | None, secret_file: Path | None) -> bytes | None:
    """The admin key for a drill of a running cluster (a local one makes its own)."""
    if address is None:
        return None
    try:
        return load_admin_key(secret_file, os.environ)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _kinds(_ctx: Any, _param: Any, value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(
            f"unknown fault kind(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


@click.command()
@click.option("--replicas", type=click.IntRange(min=3), default=3, show_default=True)
@click.option(
    "--faults",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Faults to inject (0 = no limit; then --duration ends the drill).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop injecting faults after this many seconds.",
)
@click.option(
    "--kinds",
    default=",".join(FAULT_KINDS),
    show_default=True,
    callback=_kinds,
    help="Fault kinds to draw from, comma-separated.",
)
@click.option("--clients", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--keys", type=click.IntRange(min=1), default=8, show_default=True,
    help="Register keys in use at a time (few keys: operations collide).",
)  # fmt: skip
@click.option(
    "--ops-per-key", type=click.IntRange(min=10), default=200, show_default=True,
    help="A register key is retired after this many operations.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to use.")
@click.option(
    "--base-port", type=click.IntRange(1024, 65000), default=36000, show_default=True,
    help="gRPC ports from here, Raft +100, relay +200.",
)  # fmt: skip
@click.option(
    "--dir", "work_dir", type=click.Path(path_type=Path), default=None,
    help="Work directory (data, logs); default: a temporary one, removed at the end.",
)  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the temporary work directory.")
@click.option(
    "--report", "report_dir", type=click.Path(path_type=Path), default=None,
    help="Write report.html, report.json and summary.txt here.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--unsafe-follower-reads", is_flag=True, hidden=True,
    help="Tests only: followers answer reads locally (the drill must fail).",
)  # fmt: skip
@click.option(
    "--address", default=None,
    help="Drill the running cluster of this replica (gRPC host:port) instead of a local one.",
)  # fmt: skip
@click.option("--kill-cmd", default=None, help="With --address: kill a replica ({host}, ...).")
@click.option("--start-cmd", default=None, help="With --address: start a killed replica.")
@click.option("--pause-cmd", default=None, help="With --address: pause a replica.")
@click.option("--resume-cmd", default=None, help="With --address: resume a paused replica.")
@click.option(
    "--secret-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="With --address: the cluster secret file (else $GCS_HA_SECRET), for the digests.",
)  # fmt: skip
@click.option("-v", "--verbose", is_flag=True, help="Log what the drill does.")
@progress_option
def drill(
    *,
    replicas: int,
    faults: int,
    duration: float | None,
    kinds: tuple[str, ...],
    clients: int,
    keys: int,
    ops_per_key: int,
    seed: int,
    host: str,
    base_port: int,
    work_dir: Path | None,
    keep: bool,
    report_dir: Path | None,
    as_json: bool,
    unsafe_follower_reads: bool,
    address: str | None,
    kill_cmd: str | None,
    start_cmd: str | None,
    pause_cmd: str | None,
    resume_cmd: str | None,
    secret_file: Path | None,
    verbose: bool,
    progress: bool | None,
) -> None:
    """Start a local cluster, run a client load through Ray's KV protocol, inject faults
    (kill -9, pauses, partitions, power loss, membership churn) and check the history:
    linearizability, lost writes, replica divergence, outage per fault.

    With --address, drill a running cluster instead (for --duration seconds; faults only
    through the --kill-cmd/--start-cmd and --pause-cmd/--resume-cmd templates, whose
    fields are {node_id}, {gcs_address}, {raft_address} and {host}). Run it on a cluster
    without other traffic: the digests are compared once all replicas applied the same
    index."""
    from gcs_ha.drill import render, report  # noqa: PLC0415
    from gcs_ha.drill.remote import FaultCommands  # noqa: PLC0415
    from gcs_ha.drill.runner import DrillConfig, run  # noqa: PLC0415

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s drill %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = DrillConfig(
        replicas=replicas,
        faults=faults,
        duration_s=duration,
        kinds=kinds,  # type: ignore[arg-type]  # checked by _kinds
        clients=clients,
        keys=keys,
        ops_per_key=ops_per_key,
        seed=seed,
        host=host,
        base_port=base_port,
        work_dir=work_dir,
        keep=keep,
        unsafe_follower_reads=unsafe_follower_reads,
        address=address,
        commands=FaultCommands(kill_cmd, start_cmd, pause_cmd, resume_cmd),
        admin_key=_admin_key(address, secret_file),
    )

    steps = _progress(config, progress, verbose)
    try:
        with steps:
            result = run(config, steps)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except GcsHaError as exc:
        raise click.ClickException(str(exc)) from exc
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        render.write_html(result, report_dir / "report.html")
        (report_dir / "report.json").write_text(json.dumps(report.to_json(result), indent=2))
        (report_dir / "summary.txt").write_text(render.summary_text(result))
        steps.note(f"report written to {report_dir}/report.html")
    if as_json:
        click.echo(json.dumps(report.to_json(result), indent=2))
    else:
        click.echo(render.summary_text(result))
    sys.exit(0 if result.passed else 1)



def _progress(config: DrillConfig, flag: bool | None, verbose: bool) -> WorkProgress:
    """The progress bar: faults done of --faults, or seconds of --duration."""
    if config.duration_s is None:
        return for_command(flag, "drill", config.faults, unit="faults", verbose=verbose)
    duration = config.duration_s
    return for_command(flag, "drill", duration, unit="s", planned_s=duration, verbose=verbose)
