"""Snapshotter directly (consensus/snapshotter.py), over real LMDBs in tmp_path: a snapshot
written from one replica's state is installed by a replica that is behind it (the same
tables afterwards), kept out by one that already holds everything it covers, and a
damaged one stops the replica instead of being installed. pysyncobj's part (when to
snapshot, streaming it) is tested in test_raft_cluster.py."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from gcs_ha.consensus import envelope
from gcs_ha.consensus.snapshotter import SUCCESS, Snapshotter
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE

MAP = 64 * 2**20


class Node:
    """What pysyncobj hands the serializer for each member: an object with an `id`."""

    def __init__(self, address: str) -> None:
        self.id = address


class Replica:
    """One replica's LMDB, state machine and snapshotter under `root`."""

    def __init__(self, root: Path) -> None:
        self.lmdb = root / "lmdb"
        self.dump = root / "snapshot"
        root.mkdir(parents=True, exist_ok=True)
        self.fatal: list[str] = []
        self.installed = 0
        self.sm = LmdbStateMachine(self._open(), lambda what, exc: self.fatal.append(what))
        self.snapshotter = Snapshotter(
            self.sm,
            self.lmdb,
            self.dump,
            self._open,
            Node,
            on_installed=self._count,
            on_fatal=lambda what, exc: self.fatal.append(what),
        )

    def _open(self) -> LmdbEnv:
        return LmdbEnv(self.lmdb, sync=False, metasync=False, map_size=MAP)

    def _count(self) -> None:
        self.installed += 1

    def apply(self, first: int, n: int) -> None:
        for index in range(first, first + n):
            request = envelope.put(KV_TABLE, b"k%d" % index, b"v%d" % index, True)
            self.sm.apply(index, envelope.encode([request]))
        self.sm.commit()

    def snapshot(self, tmp: Path) -> None:
        last = (b"", self.sm.applied_index, 1)
        self.snapshotter.serialize(str(tmp), (last, last, [Node("a:1"), Node("b:1")]))
        self.snapshotter.wait()
        assert self.snapshotter.check() == SUCCESS

    def digest(self) -> Any:
        return self.sm.env.digest()


def test_a_replica_behind_installs_the_snapshot_and_one_ahead_keeps_its_own(
    tmp_path: Path,
) -> None:
    leader = Replica(tmp_path / "leader")
    leader.apply(2, 50)
    leader.snapshot(tmp_path / "leader" / "snapshot.tmp")
    assert leader.dump.exists()

    behind = Replica(tmp_path / "behind")
    behind.apply(2, 5)
    last, _previous, nodes = behind.snapshotter.deserialize(str(leader.dump))
    assert last[1] == 51 and sorted(n.id for n in nodes) == ["a:1", "b:1"]
    assert behind.installed == 1 and behind.fatal == []
    assert behind.digest() == leader.digest()

    ahead = Replica(tmp_path / "ahead")
    ahead.apply(2, 60)
    before = ahead.digest()
    ahead.snapshotter.deserialize(str(leader.dump))
    assert ahead.installed == 0 and ahead.fatal == []
    assert ahead.digest() == before  # its own LMDB kept: it holds more than the snapshot


def test_a_damaged_snapshot_stops_the_replica_instead_of_being_installed(tmp_path: Path) -> None:
    leader = Replica(tmp_path / "leader")
    leader.apply(2, 20)
    leader.snapshot(tmp_path / "leader" / "snapshot.tmp")
    data = bytearray(leader.dump.read_bytes())
    data[-100] ^= 0xFF  # one byte of the image flipped
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(data))

    behind = Replica(tmp_path / "behind")
    behind.apply(2, 3)
    before = behind.digest()
    with contextlib.suppress(Exception):  # raised after on_fatal, which stops the process
        behind.snapshotter.deserialize(str(damaged))
    assert behind.fatal and "cannot restore the snapshot" in behind.fatal[0]
    assert behind.installed == 0
    assert behind.digest() == before
