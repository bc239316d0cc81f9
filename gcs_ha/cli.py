"""The `gcs-ha` command line (click): start, up, status, join, leave, ray-head, bench, ...

A mistake of the user (bad flag, missing secret, unreachable address, a data dir of
another node) ends with one line "Error: ..." on stderr and a non-zero exit: 2 for
bad input (click usage errors and ConfigError), 1 for everything else. Options also
come from the environment and a config file (gcs_ha.cli_config).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from gcs_ha import __version__, table
from gcs_ha.addresses import check_address
from gcs_ha.admin_auth import admin_key
from gcs_ha.admin_client import call_on_leader
from gcs_ha.bench.commands import actors as bench_actors
from gcs_ha.bench.commands import failover as bench_failover
from gcs_ha.bench.commands import scale as bench_scale
from gcs_ha.bench.commands import storage as bench_storage
from gcs_ha.bench.kv import kv as bench_kv
from gcs_ha.cli_config import configure
from gcs_ha.cli_support import (
    BadInput,
    friendly_errors,
    json_option,
    report,
    secret_file_option,
)
from gcs_ha.cluster_ops import add_self, check_join, discover, gather_status, leave
from gcs_ha.cluster_view import ClusterView
from gcs_ha.consensus.config import ReplicaConfig
from gcs_ha.drill.command import drill
from gcs_ha.errors import ConfigError
from gcs_ha.names import check_name
from gcs_ha.raft_options import (
    DURATION,
    format_duration,
    timing_flags,
    timing_options,
    with_timing,
)
from gcs_ha.ray_auth import load_ray_auth
from gcs_ha.ray_head import exec_ray_head
from gcs_ha.ray_tls import load_ray_tls
from gcs_ha.secret import decide_security, load_admin_key, load_secret
from gcs_ha.server.handoff import HANDOFF_TIMEOUT_S
from gcs_ha.server.interpreter import run_front_end
from gcs_ha.server.replica_main import ReplicaProcess
from gcs_ha.snapshot_commands import recover, snapshot
from gcs_ha.storage_options import storage_flags, storage_options, with_storage
from gcs_ha.up import resolve_layout, run_up

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
log = logging.getLogger("gcs_ha.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gcs-ha")
def cli() -> None:
    """gcs-ha: Ray's Global Control Service, highly available (Raft over LMDB)."""


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="gcs-ha")
    except KeyboardInterrupt:
        sys.exit(130)


def _setup_logging(level: str, node_id: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {node_id} %(name)s: %(message)s",
        stream=sys.stderr,
    )


def build_config(
    *,
    node_id: str,
    data_dir: Path,
    raft_address: str,
    gcs_address: str,
    peers: Sequence[str],
    cluster_name: str,
    secret_file: Path | None,
    insecure: bool,
    joining: bool,
    tuning: dict[str, Any] | None = None,
) -> ReplicaConfig:
    """Check the replica options and turn them into a ReplicaConfig (ConfigError if bad).
    `tuning`: the options of gcs_ha.storage_options and gcs_ha.raft_options (their
    defaults when None)."""
    check_name("node id", node_id)
    check_name("cluster name", cluster_name)
    check_address(raft_address)
    check_address(gcs_address)
    if raft_address == gcs_address:
        raise ConfigError("--raft-address and --gcs-address must differ")
    # The own address may appear in --peer (one peer list for every machine): dropped.
    others = tuple(dict.fromkeys(check_address(p) for p in peers if p != raft_address))
    if joining and not others:
        raise ConfigError("--join needs the current members' Raft addresses as --peer")
    secret = load_secret(secret_file, os.environ)
    security = decide_security(
        secret, insecure, [raft_address, *others], several=bool(others) or joining
    )
    config = ReplicaConfig(
        node_id=node_id,
        data_dir=data_dir,
        raft_address=raft_address,
        gcs_address=gcs_address,
        peers=others,
        secret=security.secret,
        insecure=security.insecure,
        cluster_name=cluster_name,
        joining=joining,
    )
    return with_timing(with_storage(config, tuning), tuning) if tuning else config


def _run_replica(
    config: ReplicaConfig,
    listen: str | None,
    after_start: Callable[[ReplicaProcess], Awaitable[None]] | None = None,
    supervisor_pid: int | None = None,
    *,
    http_address: str | None = None,
    handoff_s: float = HANDOFF_TIMEOUT_S,
) -> None:
    """Run the replica process in the foreground; exits with its exit code. `listen`:
    where the gRPC port binds (None: the advertised --gcs-address); `http_address`:
    where the HTTP listener binds (None: no listener); `handoff_s`: --handoff-timeout."""
    ray_auth, ray_tls = load_ray_auth(os.environ), load_ray_tls(os.environ)
    if ray_auth.enabled:
        log.info("Ray token authentication is on: Ray's calls without the token are refused")
    if ray_tls is not None:
        log.info("Ray TLS is on: the gRPC port and every channel from it use mutual TLS")
    process = ReplicaProcess(
        config,
        after_start=after_start,
        supervisor_pid=supervisor_pid,
        ray_auth=ray_auth,
        ray_tls=ray_tls,
        listen=listen,
        http_address=http_address,
        handoff_s=handoff_s,
    )
    code = run_front_end(process.run())
    sys.exit(code)


def replica_options(fn: F) -> F:
    """The options `start` and `join` share."""
    for option in reversed(
        [
            click.option("--node-id", required=True, help="Stable name of this replica."),
            click.option(
                "--data-dir",
                required=True,
                type=click.Path(file_okay=False, path_type=Path),
                help="This replica's data dir (created on first start).",
            ),
            click.option("--raft-address", required=True, help="HOST:PORT of the Raft port."),
            click.option(
                "--gcs-address",
                required=True,
                help="HOST:PORT of the gRPC port, as Ray and the other replicas reach it "
                "(advertised in the members table).",
            ),
            click.option(
                "--listen",
                help="HOST:PORT the gRPC port binds, when not --gcs-address (e.g. "
                "0.0.0.0:6379: every interface, --gcs-address being the one to use).",
            ),
            click.option(
                "--http-address",
                help="HOST:PORT of the HTTP listener: /metrics (Prometheus), /livez, "
                "/readyz, /leader, /status (default: none).",
            ),
            secret_file_option,
            click.option(
                "--insecure",
                is_flag=True,
                help="Run without a secret (only when every Raft address is loopback).",
            ),
            click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True),
            click.option(
                "--handoff-timeout",
                "handoff_timeout_s",
                type=DURATION,
                default=format_duration(HANDOFF_TIMEOUT_S),
                show_default=True,
                help="On SIGTERM, the leader first hands leadership to a caught-up "
                "follower, taking at most this long (0s: stop without).",
            ),
            storage_options,
            timing_options,
        ]
    ):
        fn = option(fn)
    return fn


@cli.command()
@replica_options
@click.option(
    "--peer",
    "peers",
    multiple=True,
    help="Raft HOST:PORT of another member (repeat it; in GCS_HA_PEER: separated by spaces).",
)
@click.option("--cluster-name", default="gcs-ha", show_default=True)
@click.option("--join", "joining", is_flag=True, help="This replica joins a running cluster.")
@click.option("--supervisor-pid", type=int, hidden=True)
@friendly_errors
def start(
    *,
    node_id: str,
    data_dir: Path,
    raft_address: str,
    gcs_address: str,
    listen: str | None,
    http_address: str | None,
    secret_file: Path | None,
    insecure: bool,
    log_level: str,
    peers: tuple[str, ...],
    cluster_name: str,
    joining: bool,
    supervisor_pid: int | None,
    handoff_timeout_s: float,
    **tuning: Any,
) -> None:
    """Run one replica in the foreground until SIGTERM/SIGINT."""
    config = build_config(
        node_id=node_id,
        data_dir=data_dir,
        raft_address=raft_address,
        gcs_address=gcs_address,
        peers=peers,
        cluster_name=cluster_name,
        secret_file=secret_file,
        insecure=insecure,
        joining=joining,
        tuning=tuning,
    )
    _setup_logging(log_level, node_id)
    _run_replica(
        config,
        _listen(listen),
        supervisor_pid=supervisor_pid,
        http_address=_listen(http_address),
        handoff_s=handoff_timeout_s,
    )


@cli.command()
@click.option("--address", required=True, help="gRPC HOST:PORT of any current member.")
@replica_options
@friendly_errors
def join(
    *,
    address: str,
    node_id: str,
    data_dir: Path,
    raft_address: str,
    gcs_address: str,
    listen: str | None,
    http_address: str | None,
    secret_file: Path | None,
    insecure: bool,
    log_level: str,
    handoff_timeout_s: float,
    **tuning: Any,
) -> None:
    """Run a new replica in the foreground and add it to the cluster at ADDRESS."""
    check_address(address)
    listen = _listen(listen)
    cluster = discover(address)
    already = check_join(cluster, node_id, raft_address, gcs_address)
    config = build_config(
        node_id=node_id,
        data_dir=data_dir,
        raft_address=raft_address,
        gcs_address=gcs_address,
        peers=[m.raft_address for m in cluster.members if m.node_id != node_id],
        cluster_name=cluster.cluster_name,
        secret_file=secret_file,
        insecure=insecure,
        joining=not already,
        tuning=tuning,
    )
    _setup_logging(log_level, node_id)

    async def add(process: ReplicaProcess) -> None:
        key = admin_key(config.secret) if config.secret else None
        await asyncio.to_thread(add_self, address, node_id, raft_address, gcs_address, key=key)
        log.info("added to cluster %r as %s; catching up", cluster.cluster_name, node_id)

    if already:
        log.info("%s is already a member of %r: restarting it", node_id, cluster.cluster_name)
    _run_replica(
        config,
        listen,
        after_start=None if already else add,
        http_address=_listen(http_address),
        handoff_s=handoff_timeout_s,
    )


def _listen(listen: str | None) -> str | None:
    return None if listen is None else check_address(listen)


@cli.command(name="leave")
@click.option("--address", required=True, help="gRPC HOST:PORT of any member.")
@click.option("--node-id", help="The member to remove.")
@click.option(
    "--raft-address",
    help="The member to remove, by Raft HOST:PORT (one that never registered a node id, "
    "e.g. after an interrupted join).",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds.")
@secret_file_option
@json_option
@friendly_errors
def leave_command(
    *,
    address: str,
    node_id: str | None,
    raft_address: str | None,
    timeout: float,
    secret_file: Path | None,
    as_json: bool,
) -> None:
    """Remove a member (moving leadership away first) and shut it down."""
    check_address(address)
    if not node_id and not raft_address:
        raise BadInput("name the member to remove: --node-id or --raft-address")
    if raft_address:
        check_address(raft_address)
    key = load_admin_key(secret_file, os.environ)
    removed = leave(address, node_id, key, deadline_s=timeout, raft_address=raft_address)
    report(as_json, removed.to_json(), str(removed))


@cli.command()
@click.option("--address", required=True, help="gRPC HOST:PORT of any member.")
@json_option
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds per call.")
@friendly_errors
def status(address: str, as_json: bool, timeout: float) -> None:
    """Show every member of the cluster and the leader. Exit code: 0 a leader serves and
    every member answered; 3 no leader serves (no quorum?); 4 a leader serves but some
    member did not answer; 1 ADDRESS did not answer; 2 bad input."""
    check_address(address)
    view = gather_status(address, timeout)
    report(as_json, view.to_json(), render_table(view))
    sys.exit(view.health())


@cli.command(name="transfer-leader")
@click.option("--address", required=True, help="gRPC HOST:PORT of any member.")
@click.option("--to", "target", help="The member to lead (default: any caught-up follower).")
@secret_file_option
@json_option
@friendly_errors
def transfer_leader(
    address: str, target: str | None, secret_file: Path | None, as_json: bool
) -> None:
    """Hand leadership to another member (before maintenance of the leader's machine).
    Needs the cluster secret."""
    check_address(address)
    if target is not None:
        check_name("node id", target)
    key = load_admin_key(secret_file, os.environ)
    call_on_leader(address, lambda client: client.transfer_leadership(target or ""), key=key)
    view = gather_status(address)
    report(as_json, {"leader": view.leader}, f"leader: {view.leader or 'none'}")


def render_table(view: ClusterView) -> str:
    """The member table of `gcs-ha status`, then the leader line."""
    header = ("ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "GCS ADDRESS", "RAFT ADDRESS",
              "SERVING")  # fmt: skip
    rows: list[tuple[object, ...]] = []
    for m in view.members:
        serving = "unreachable" if not m.reachable else ("yes" if m.serving else "no")
        rows.append((m.id or "?", m.role, m.term, m.commit_index, m.applied_index, m.lag,
                     m.gcs_address or None, m.raft_address, serving))  # fmt: skip
    leader = f"{view.leader} ({view.leader_gcs_address() or '?'})" if view.leader else "none"
    if view.leader and not view.leader_reachable():
        leader += ", according to its followers: it did not answer"
    return f"{table.render_table(rows, header=header)}\nleader: {leader}\n{_version_line(view)}"


def _version_line(view: ClusterView) -> str:
    """The log entry format the leader writes; while members differ, what each reads."""
    line = f"cluster version: {view.cluster_version or '-'}"
    reads = {m.id or m.raft_address: m.entry_version for m in view.members if m.reachable}
    if any(v != view.cluster_version for v in reads.values()):
        line += " (newest format each member reads: "
        line += ", ".join(f"{name} {v}" for name, v in reads.items()) + ")"
    return line


@cli.command()
@click.option("--replicas", type=int, help="Number of replicas (default 3, or DIR's).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("gcs-ha-data"),
    show_default=True,
)
@click.option("--port", type=int, help="gRPC port of r0 (default 6379); r<i> uses PORT+i.")
@click.option("--raft-port", type=int, help="Raft port of r0 (default PORT+1000).")
@click.option("--cluster-name", help="Cluster name (default gcs-ha).")
@click.option(
    "--host",
    help="Address every replica binds and announces. Default: Raft on 127.0.0.1, gRPC on "
    "every interface, announced at this machine's IP (the one Ray rewrites 127.0.0.1 to), "
    "so Ray works with what `up` prints. E.g. 127.0.0.2 keeps everything on loopback.",
)
@click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True)
@storage_options
@timing_options
@friendly_errors
def up(
    *,
    replicas: int | None,
    data_dir: Path,
    port: int | None,
    raft_port: int | None,
    cluster_name: str | None,
    host: str | None,
    log_level: str,
    **tuning: Any,
) -> None:
    """Run a local cluster of N replicas in the foreground (development). The storage
    and timing options are every replica's."""
    if cluster_name is not None:
        check_name("cluster name", cluster_name)
    layout = resolve_layout(data_dir, replicas, port, raft_port, cluster_name, host=host)
    # Checked here once, rather than by each replica as it starts.
    with_timing(with_storage(ReplicaConfig("x", data_dir, "", ""), tuning), tuning)
    flags = storage_flags(tuning) + timing_flags(tuning)
    sys.exit(run_up(layout, log_level, click.echo, replica_flags=flags))


@cli.command(name="ray-head", context_settings={"ignore_unknown_options": True})
@click.option("--address", required=True, help="gRPC HOST:PORT of any gcs-ha replica.")
@click.argument("ray_args", nargs=-1, type=click.UNPROCESSED)
@friendly_errors
def ray_head(address: str, ray_args: tuple[str, ...]) -> None:
    """Start a Ray head node on the gcs-ha cluster at ADDRESS: `ray start --head` with
    RAY_ARGS (give them after '--'), without a gcs_server of its own."""
    exec_ray_head(address, ray_args)


@cli.group()
def bench() -> None:
    """Benchmarks."""


bench.add_command(bench_storage)
bench.add_command(bench_failover)
bench.add_command(bench_kv)
bench.add_command(bench_actors)
bench.add_command(bench_scale)
cli.add_command(drill)
cli.add_command(snapshot)
cli.add_command(recover)
configure(cli)  # every option also from GCS_HA_<OPTION> and --config FILE


if __name__ == "__main__":
    main()
