"""gcs_ha.consensus.force_new_cluster on data dirs built by hand: the replica's own Raft
address comes from the members table, or from the caller when it never registered."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gcs_ha.consensus import recovery
from gcs_ha.consensus.force_new_cluster import force_new_cluster
from gcs_ha.consensus.snapshot import verify_snapshot
from gcs_ha.errors import ConfigError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE, MEMBERS_TABLE


def data_dir(tmp_path: Path, members: dict[str, str]) -> Path:
    """A stopped replica's data dir: 5 KV keys at index 5, `members` (id -> Raft address)."""
    (tmp_path / "raft").mkdir()
    env = LmdbEnv(tmp_path / "lmdb", sync=False)
    with env.write() as txn:
        for i in range(5):
            txn.put(KV_TABLE, b"k%d" % i, b"v")
        for node, address in members.items():
            record = json.dumps({"raft_address": address, "gcs_address": "127.0.0.1:1"})
            txn.put(MEMBERS_TABLE, node.encode(), record.encode())
        txn.set_applied_index(5)
    recovery.close_cleanly(env)
    return tmp_path


def test_the_survivor_alone_in_the_snapshot_and_the_members_table(tmp_path: Path) -> None:
    d = data_dir(tmp_path, {"r0": "127.0.0.1:10", "r1": "127.0.0.1:11", "r2": "127.0.0.1:12"})
    done = force_new_cluster(d, "r1")
    assert (done.raft_address, done.index, done.removed) == ("127.0.0.1:11", 5, ("r0", "r2"))
    assert verify_snapshot(d / "raft" / "snapshot").cluster == ("127.0.0.1:11",)
    env = LmdbEnv(d / "lmdb", sync=False)
    with env.read() as txn:
        assert [k for k, _ in txn.scan(MEMBERS_TABLE)] == [b"r1"]
        assert len(list(txn.scan(KV_TABLE))) == 5
    env.close()


def test_a_survivor_that_never_registered_needs_its_raft_address(tmp_path: Path) -> None:
    d = data_dir(tmp_path, {"r0": "127.0.0.1:10"})
    with pytest.raises(ConfigError, match="give --raft-address"):
        force_new_cluster(d, "r1")
    assert not (d / "raft" / "snapshot").exists()
    done = force_new_cluster(d, "r1", raft_address="127.0.0.1:11")
    assert done.raft_address == "127.0.0.1:11" and done.removed == ("r0",)


def test_a_given_address_must_match_the_registered_one(tmp_path: Path) -> None:
    d = data_dir(tmp_path, {"r1": "127.0.0.1:11"})
    with pytest.raises(ConfigError, match=re.escape("registered with Raft address 127.0.0.1:11")):
        force_new_cluster(d, "r1", raft_address="127.0.0.1:99")
