"""The leader's capacity guard (gcs_ha.consensus.capacity) over a real LMDB and the real
file system of the test's temp dir, the proposer's use of it, and the size options."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gcs_ha.consensus import envelope
from gcs_ha.consensus.capacity import CapacityGuard
from gcs_ha.consensus.proposer import GroupCommitProposer
from gcs_ha.errors import ConfigError, ResourceExhaustedError
from gcs_ha.proto import raft_log_pb2 as pb
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.storage_options import parse_size

MAP = 16 * 2**20
VALUE = b"x" * (256 * 1024)


def put(i: int) -> pb.Request:
    return envelope.put(KV_TABLE, b"k%d" % i, VALUE, True)


def store(env: LmdbEnv, i: int) -> None:
    with env.write() as txn:
        txn.put(KV_TABLE, b"k%d" % i, VALUE)


def fill_until_refused(guard: CapacityGuard, env: LmdbEnv, limit: int = 1000) -> int:
    """Admit and apply puts until the guard refuses one; how many went in."""
    for i in range(limit):
        try:
            guard.admit(put(i))
        except ResourceExhaustedError:
            return i
        store(env, i)
        guard._measured_at = 0.0  # measure again at the next admit (as after REFRESH_S)
    raise AssertionError("never refused")


def test_a_nearly_full_map_refuses_puts_but_not_deletes(tmp_path: Path) -> None:
    env = LmdbEnv(tmp_path / "lmdb", sync=False, map_size=MAP)
    guard = CapacityGuard(tmp_path / "lmdb", lambda: env, MAP, disk_reserve_bytes=0)
    stored = fill_until_refused(guard, env)
    # Refused with an eighth of the map still free: deletes always find pages.
    assert 0.7 * MAP < stored * len(VALUE) < MAP * 7 / 8
    with pytest.raises(ResourceExhaustedError, match="LMDB's map would hold"):
        guard.admit(put(stored))
    guard.admit(envelope.delete(KV_TABLE, [b"k0"]))
    with env.write() as txn:
        for i in range(stored // 2):
            txn.delete(KV_TABLE, b"k%d" % i)
    guard._measured_at = 0.0
    guard.admit(put(stored))  # room again
    assert guard.refused == 2
    env.close()


def test_a_nearly_full_disk_refuses_puts(tmp_path: Path) -> None:
    """The disk's real free space, with a reserve set just under it: the guard keeps room
    for the journal, LMDB's growth, a snapshot of the store and the reserve."""
    env = LmdbEnv(tmp_path / "lmdb", sync=False, map_size=1 << 30)
    fs = os.statvfs(tmp_path)
    reserve = fs.f_bavail * fs.f_frsize - 8 * 2**20
    guard = CapacityGuard(tmp_path / "lmdb", lambda: env, 1 << 30, disk_reserve_bytes=reserve)
    stored = fill_until_refused(guard, env)
    assert 1 <= stored <= 16  # 8 MiB minus twice what is stored (LMDB, a snapshot)
    with pytest.raises(ResourceExhaustedError, match="disk has"):
        guard.admit(put(stored))
    env.close()


def test_the_proposer_refuses_before_proposing() -> None:
    proposed: list[bytes] = []

    def admit(request: pb.Request) -> None:
        if request.WhichOneof("op") == "put":
            raise ResourceExhaustedError("full")

    async def main() -> None:
        proposer = GroupCommitProposer(
            lambda entry, done: proposed.append(entry), 1, 2**20, 2**20, admit=admit
        )
        with pytest.raises(ResourceExhaustedError):
            await proposer.submit(put(0))
        assert proposed == [] and proposer.queued_bytes == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 2**20), ("8GiB", 8 * 2**30), ("512M", 512 * 2**20), ("64 KiB", 64 * 1024)],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "8x", "-1", "1.5G", "GiB"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a size"):
        parse_size(text)
