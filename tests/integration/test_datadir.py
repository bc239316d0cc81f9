"""gcs_ha.datadir: identity file, refusal of foreign data dirs, exclusive lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from gcs_ha.datadir import IDENTITY_FILE, LOCK_FILE, DataDir, Identity, read_identity
from gcs_ha.errors import DataDirError


def test_first_open_creates_identity_and_lock(tmp_path: Path) -> None:
    path = tmp_path / "r0"
    with DataDir.open(path, "r0", "prod") as data_dir:
        assert data_dir.created
        assert data_dir.identity == Identity("r0", "prod")
        assert (path / LOCK_FILE).read_text().strip() == str(os.getpid())
    record = json.loads((path / IDENTITY_FILE).read_text())
    assert record["node_id"] == "r0"
    assert record["cluster_name"] == "prod"
    assert record["format"] == 1
    assert read_identity(path) == Identity("r0", "prod")


def test_reopen_with_same_identity(tmp_path: Path) -> None:
    DataDir.open(tmp_path, "r1", "prod").close()
    with DataDir.open(tmp_path, "r1", "prod") as data_dir:
        assert not data_dir.created


def test_other_node_id_is_refused(tmp_path: Path) -> None:
    DataDir.open(tmp_path, "r1", "prod").close()
    with pytest.raises(DataDirError, match="belongs to node 'r1', not 'r2'"):
        DataDir.open(tmp_path, "r2", "prod")


def test_other_cluster_is_refused(tmp_path: Path) -> None:
    DataDir.open(tmp_path, "r1", "prod").close()
    with pytest.raises(DataDirError, match="belongs to cluster 'prod', not 'staging'"):
        DataDir.open(tmp_path, "r1", "staging")


def test_refusal_releases_the_lock(tmp_path: Path) -> None:
    DataDir.open(tmp_path, "r1", "prod").close()
    with pytest.raises(DataDirError):
        DataDir.open(tmp_path, "r2", "prod")
    DataDir.open(tmp_path, "r1", "prod").close()


def test_second_open_in_same_process_is_refused_while_locked(tmp_path: Path) -> None:
    with (
        DataDir.open(tmp_path, "r0", "c"),
        pytest.raises(
            DataDirError, match=rf"in use by another gcs-ha process \(pid {os.getpid()}\)"
        ),
    ):
        DataDir.open(tmp_path, "r0", "c")
    DataDir.open(tmp_path, "r0", "c").close()


def _hold_lock(
    path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:
    with DataDir.open(Path(path), "r0", "c"):
        ready.set()
        done.wait(30)


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(DataDirError, match=f"pid {holder.pid}"):
            DataDir.open(tmp_path, "r0", "c")
    finally:
        done.set()
        holder.join(30)
    # The holder exited: the kernel released its lock.
    DataDir.open(tmp_path, "r0", "c").close()


def test_non_empty_dir_without_identity_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataDirError, match="not empty"):
        DataDir.open(tmp_path, "r0", "c")
    assert not (tmp_path / IDENTITY_FILE).exists()


def test_lost_and_found_is_tolerated(tmp_path: Path) -> None:
    (tmp_path / "lost+found").mkdir()
    DataDir.open(tmp_path, "r0", "c").close()


def test_corrupt_identity_is_a_data_dir_error(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text("{not json")
    with pytest.raises(DataDirError, match="unreadable identity"):
        DataDir.open(tmp_path, "r0", "c")


def test_unknown_identity_format(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text(
        json.dumps({"format": 99, "node_id": "r0", "cluster_name": "c"})
    )
    with pytest.raises(DataDirError, match="unknown identity format 99"):
        DataDir.open(tmp_path, "r0", "c")


def test_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataDirError):
        DataDir.open(target, "r0", "c")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_uncreatable_dir(tmp_path: Path) -> None:
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(DataDirError, match="cannot create data dir"):
            DataDir.open(tmp_path / "sub", "r0", "c")
    finally:
        tmp_path.chmod(stat.S_IRWXU)
