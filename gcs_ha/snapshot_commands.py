"""`gcs-ha snapshot save` and `gcs-ha snapshot restore`: backups of a running cluster, and
new clusters seeded from one (gcs_ha.backup has the file format and the rules); `gcs-ha
recover`: one surviving replica made a cluster of one after a lost quorum
(gcs_ha.consensus.force_new_cluster)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import click

from gcs_ha.addresses import check_address
from gcs_ha.admin_client import AdminClient, call_on_leader
from gcs_ha.backup import BackupHeader, restore_data_dir, write_backup
from gcs_ha.cli_support import friendly_errors, json_option, report, secret_file_option
from gcs_ha.consensus.force_new_cluster import force_new_cluster
from gcs_ha.datadir import DataDir, Identity, read_identity
from gcs_ha.errors import ConfigError
from gcs_ha.names import check_name
from gcs_ha.secret import load_admin_key, load_secret
from gcs_ha.storage_options import SIZE

map_size_option = click.option(
    "--map-size",
    type=SIZE,
    default="8GiB",
    show_default=True,
    help="As for `start`.",
)


@click.group()
def snapshot() -> None:
    """Back up a running cluster; seed a new cluster from a backup."""


@snapshot.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--address", required=True, help="gRPC HOST:PORT of any member.")
@secret_file_option
@json_option
@friendly_errors
def save(file: Path, address: str, secret_file: Path | None, as_json: bool) -> None:
    """Write a consistent, checksummed backup of the cluster at ADDRESS to FILE, taken on
    the leader while the cluster serves: it holds every write acknowledged before it
    began. Needs the cluster secret."""
    check_address(address)
    key = load_admin_key(secret_file, os.environ)

    def take(client: AdminClient) -> BackupHeader:
        header, chunks = client.backup()
        return write_backup(file, BackupHeader.from_json(header), chunks)

    header = call_on_leader(address, take, key=key)
    report(
        as_json,
        {"file": str(file), **asdict(header)},
        f"backup of cluster {header.cluster_name!r} at Raft index {header.applied_index} "
        f"from {header.source_node}: {file} ({header.image_length} bytes of tables, "
        f"sha256 {header.image_sha256[:16]}...)",
    )


@snapshot.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--node-id", required=True, help="The new replica's node id.")
@click.option("--cluster-name", required=True, help="The new cluster's name (not the old one).")
@map_size_option
@secret_file_option
@json_option
@friendly_errors
def restore(
    *,
    file: Path,
    data_dir: Path,
    node_id: str,
    cluster_name: str,
    map_size: int,
    secret_file: Path | None,
    as_json: bool,
) -> None:
    """Seed DATA_DIR (new or empty) as replica NODE_ID of a new cluster from the backup
    FILE. Restore every replica of the new cluster from the same file, then start them
    with `gcs-ha start` as usual, with the new cluster name and a new secret (given here
    too, so that it can be checked against the old one)."""
    check_name("node id", node_id)
    check_name("cluster name", cluster_name)
    secret = load_secret(secret_file, os.environ)
    header = restore_data_dir(file, data_dir, Identity(node_id, cluster_name), secret, map_size)
    doc = {
        "data_dir": str(data_dir),
        "node_id": node_id,
        "cluster_name": cluster_name,
        "backup": {"file": str(file), **asdict(header)},
    }
    report(
        as_json,
        doc,
        f"{data_dir}: replica {node_id} of cluster {cluster_name!r}, seeded from the backup "
        f"of {header.cluster_name!r} at Raft index {header.applied_index}",
    )


@click.command()
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@map_size_option
@click.option(
    "--raft-address",
    help="Its Raft HOST:PORT; needed only if it never registered (stopped at first start).",
)
@click.option("--yes", is_flag=True, help="Do it (without it, nothing changes).")
@json_option
@friendly_errors
def recover(
    data_dir: Path, map_size: int, raft_address: str | None, yes: bool, as_json: bool
) -> None:
    """LAST RESORT after losing a quorum for good: turn the stopped replica in DATA_DIR
    into a cluster of one member, then start it as before and add new replicas with
    `gcs-ha join`. Writes the dead majority committed that never reached this replica
    are lost. Never run it while a majority of the old cluster may come back."""
    identity = read_identity(data_dir)
    if identity is None:
        raise ConfigError(f"{data_dir} is not a gcs-ha data dir (no identity.json)")
    if not yes:
        raise ConfigError(
            f"this makes {identity.node_id} a cluster of one, dropping the other members "
            "(docs/operations.md, 'Lost quorum'); run again with --yes"
        )
    with DataDir.open(data_dir, identity.node_id, identity.cluster_name):
        if raft_address is not None:
            check_address(raft_address)
        done = force_new_cluster(data_dir, identity.node_id, map_size, raft_address)
    dropped = ", ".join(done.removed) or "none"
    report(
        as_json,
        {"data_dir": str(data_dir), "cluster_name": identity.cluster_name, **asdict(done)},
        f"{done.node_id} ({done.raft_address}) is now the only member of "
        f"{identity.cluster_name!r} at Raft index {done.index}, term {done.term}; "
        f"{done.replayed} journal entries replayed; members dropped: {dropped}. Start it "
        "as before (its --peer flags no longer count), then `gcs-ha join` new replicas.",
    )
