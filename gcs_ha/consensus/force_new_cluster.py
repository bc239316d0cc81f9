"""The last resort after a lost quorum: one surviving replica's data dir becomes a cluster
of one member, which the others then join (`gcs-ha recover`).

`force_new_cluster` works on a stopped replica: it applies every entry of its journal that
LMDB lacks (committed or not), drops the other members and writes a snapshot whose
cluster is this replica alone. The steps and what can be lost: DESIGN.md, "Recovery after
a lost quorum"; for operators, docs/operations.md.

Errors raised: ConfigError (this replica is not in its own members table),
CorruptDataError, StorageError.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcs_ha.consensus import recovery
from gcs_ha.consensus._pysyncobj import restricted_loads
from gcs_ha.consensus.journal import DurableJournal
from gcs_ha.consensus.snapshot import SnapshotHeader, fsync_dir, image_sha256, write_header
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import ConfigError, StorageError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import MEMBERS_TABLE

logger = logging.getLogger(__name__)

REGULAR, NO_OP = 0, 1  # pysyncobj's command types (first byte of a log entry)


@dataclass(frozen=True)
class Recovered:
    """What `force_new_cluster` did."""

    node_id: str
    raft_address: str
    index: int  # the Raft index the new cluster starts after
    term: int
    replayed: int  # journal entries applied to LMDB that it lacked
    removed: tuple[str, ...]  # the members dropped


def force_new_cluster(
    data_dir: Path, node_id: str, map_size: int = 8 << 30, raft_address: str | None = None
) -> Recovered:
    """Turn replica `node_id`'s data dir into a one-member cluster (module docstring). The
    caller holds the data dir's lock (gcs_ha.datadir): the replica must not run.
    `raft_address`: its Raft address, needed only when it never registered itself in the
    members table (it stopped right after its first start)."""
    raft_dir, dump = data_dir / "raft", data_dir / "raft" / "snapshot"
    env = recovery.open_for_writing(data_dir / "lmdb", dump, map_size)
    try:
        journal = DurableJournal(raft_dir / "journal")
        try:
            replayed, index, term = _replay(env, journal)
        finally:
            journal.close()
        address, removed = _alone(env, node_id, index, raft_address)
        _write_snapshot(env, dump, index, term, address)
    finally:
        recovery.close_cleanly(env)
    for path in raft_dir.glob("journal*"):
        path.unlink()
    fsync_dir(raft_dir)
    logger.warning(
        "%s is now a cluster of one at index %d, term %d (%d journal entries replayed; dropped %s)",
        node_id,
        index,
        term,
        replayed,
        ", ".join(removed) or "no member",
    )
    return Recovered(node_id, address, index, term, replayed, removed)


def _replay(env: LmdbEnv, journal: DurableJournal) -> tuple[int, int, int]:
    """Apply the journal's entries LMDB lacks; (how many, last index, last term)."""

    def fatal(what: str, exc: BaseException) -> None:
        raise StorageError(f"{what}: {exc}") from exc

    sm = LmdbStateMachine(env, fatal)
    replayed = 0
    for command, index, _term in journal[:]:
        data = entry_data(bytes(command))
        if data is not None and sm.apply(index, data) is not None:
            replayed += 1
    sm.commit()
    index, term = env.applied_index(), journal.getCurrentTerm()
    if len(journal):
        _, last_index, last_term = journal[len(journal) - 1]
        index, term = max(index, last_index), max(term, last_term)
    return replayed, index, term


def entry_data(command: bytes) -> bytes | None:
    """The state machine's entry inside a pysyncobj log command; None for pysyncobj's own
    entries (no-ops, membership changes, versions)."""
    if not command or command[0] != REGULAR:
        return None
    call: Any = restricted_loads(command[1:])
    args = call[1] if isinstance(call, tuple) and len(call) > 1 else ()
    return bytes(args[0]) if args else None


def _alone(
    env: LmdbEnv, node_id: str, index: int, given: str | None
) -> tuple[str, tuple[str, ...]]:
    """Drop every other member from the members table; this replica's Raft address (the
    registered one, else `given`; ConfigError when neither or when they differ)."""
    with env.write() as txn:
        members = {key.decode(): json.loads(value) for key, value in txn.scan(MEMBERS_TABLE)}
        registered = str(members[node_id]["raft_address"]) if node_id in members else None
        if registered is None and given is None:
            raise ConfigError(
                f"{node_id} never registered in its members table (it stopped right after "
                "its first start): give --raft-address, the one it is started with"
            )
        if registered is not None and given is not None and given != registered:
            raise ConfigError(f"{node_id} is registered with Raft address {registered}")
        removed = tuple(sorted(m for m in members if m != node_id))
        for member in removed:
            txn.delete(MEMBERS_TABLE, member.encode())
        txn.set_applied_index(index)
    env.sync()
    return registered or str(given), removed


def _write_snapshot(env: LmdbEnv, dump: Path, index: int, term: int, address: str) -> None:
    """A snapshot of LMDB at `index` whose cluster is `address` alone (fsynced, renamed)."""
    no_op = bytes([NO_OP])
    header = SnapshotHeader((no_op, index, term), (no_op, index - 1, term), (address,), index, 0)
    private = dump.with_name(dump.name + ".writing")
    with open(private, "w+b") as f:
        write_header(f, header)
        f.flush()
        start = f.tell()
        env.copy_to_fd(f.fileno())
        length = os.lseek(f.fileno(), 0, os.SEEK_END) - start
        digest = image_sha256(f, start, length)
        write_header(f, dataclasses.replace(header, image_length=length, image_sha256=digest))
        f.flush()
        os.fsync(f.fileno())
    os.replace(private, dump)
    fsync_dir(dump.parent)
