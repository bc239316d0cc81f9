"""Configuration of one replica's consensus layer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gcs_ha.errors import ConfigError


@dataclass(frozen=True)
class RaftTiming:
    """Raft timing, tuned on this kind of machine (see docs/pysyncobj-patches.md).

    Defaults: election timeout 0.3-0.6 s, heartbeat 0.05 s, a leader that hears from
    no majority for one (longest) election timeout steps down (check-quorum), reconnect
    every 0.5 s, idle links kept open.
    """

    election_min_s: float = 0.3
    election_max_s: float = 0.6
    heartbeat_s: float = 0.05
    leader_fallback_s: float = 0.6  # check-quorum: = election_max_s
    tick_s: float = 0.01
    reconnect_s: float = 0.5


@dataclass(frozen=True)
class ReplicaConfig:
    """Everything one replica needs to run.

    node_id: stable name of this replica (e.g. "r1"); kept in its data dir.
    raft_address: host:port this replica's Raft peer port binds to and is known by.
    peers: Raft addresses of the other initial members (empty for a single replica,
        or the current members when joining).
    gcs_address: host:port of this replica's gRPC port (admin + Ray's GCS services).
    secret: the cluster secret that authenticates Raft peers; None only with insecure.
    """

    node_id: str
    data_dir: Path
    raft_address: str
    gcs_address: str
    peers: tuple[str, ...] = ()
    secret: bytes | None = None
    insecure: bool = False
    cluster_name: str = "gcs-ha"
    joining: bool = False
    timing: RaftTiming = field(default_factory=RaftTiming)
    # Take a snapshot and compact the Raft log after this many entries, or once the
    # journal holds this many bytes (the journal is also kept in memory).
    compaction_min_entries: int = 20_000
    compaction_min_bytes: int = 128 * 2**20
    # LMDB's map: the most the store can ever hold (a sparse file; raise it to hold more).
    map_size_bytes: int = 8 * 2**30
    # Free disk the leader keeps on top of what a write and a snapshot need (capacity.py).
    disk_reserve_bytes: int = 64 * 2**20
    # Group commit: how many Raft entries may be in flight at once.
    max_inflight_entries: int = 1
    # Group commit: the largest batch of requests (bytes of payload) per Raft entry.
    max_entry_bytes: int = 4 * 1024 * 1024


def config_to_doc(config: ReplicaConfig) -> dict[str, Any]:
    """The config as a JSON-ready dict (the front end hands it to its consensus process)."""
    doc = asdict(config)
    doc["data_dir"] = str(config.data_dir)
    doc["peers"] = list(config.peers)
    doc["secret"] = None if config.secret is None else config.secret.hex()
    return doc


def config_from_doc(doc: dict[str, Any]) -> ReplicaConfig:
    """Inverse of `config_to_doc`. ConfigError for a malformed document."""
    try:
        fields = dict(doc)
        fields["data_dir"] = Path(fields["data_dir"])
        fields["peers"] = tuple(fields["peers"])
        secret = fields["secret"]
        fields["secret"] = None if secret is None else bytes.fromhex(secret)
        fields["timing"] = RaftTiming(**fields["timing"])
        return ReplicaConfig(**fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"bad replica config document: {exc}") from exc
