"""LmdbStateMachine over a real LMDB in tmp_path: idempotent apply by Raft index, one
transaction per tick, error results, fatal failures."""

from __future__ import annotations

from pathlib import Path

from gcs_ha.consensus import envelope
from gcs_ha.consensus.state_machine import LmdbStateMachine
from gcs_ha.errors import CorruptDataError
from gcs_ha.storage.lmdb_env import LmdbEnv
from gcs_ha.storage.store_client import KV_TABLE

Fatal = list[tuple[str, BaseException]]


def entry(*requests: envelope.Request, version: int = envelope.BASE_VERSION) -> bytes:
    return envelope.encode(list(requests), version)


def put(key: bytes, value: bytes = b"v") -> envelope.Request:
    return envelope.put(KV_TABLE, key, value, True)


def open_sm(path: Path, fatal: Fatal) -> LmdbStateMachine:
    env = LmdbEnv(path, sync=False, metasync=False, map_size=64 * 2**20)
    return LmdbStateMachine(env, lambda what, exc: fatal.append((what, exc)))


def get(sm: LmdbStateMachine, key: bytes) -> bytes | None:
    with sm.env.read() as txn:
        return txn.get(KV_TABLE, key)


def test_entries_of_a_tick_share_one_commit_that_stores_the_applied_index(
    tmp_path: Path,
) -> None:
    fatal: Fatal = []
    sm = open_sm(tmp_path, fatal)
    results = sm.apply(2, entry(put(b"a"), put(b"b")))
    assert results is not None and [r.added for r in results] == [True, True]
    sm.apply(3, entry(envelope.delete(KV_TABLE, [b"a", b"missing"])))
    assert sm.applied_index == 3
    assert sm.env.applied_index() == 0  # not committed yet
    sm.commit()
    assert sm.env.applied_index() == 3
    assert get(sm, b"a") is None and get(sm, b"b") == b"v"
    assert fatal == []
    sm.env.close()


def test_a_replayed_index_is_skipped_also_after_a_reopen(tmp_path: Path) -> None:
    fatal: Fatal = []
    sm = open_sm(tmp_path, fatal)
    sm.apply(5, entry(put(b"k", b"first")))
    assert sm.apply(5, entry(put(b"k", b"again"))) is None
    assert sm.apply(4, entry(put(b"k", b"older"))) is None
    sm.commit()
    sm.env.close()
    sm = open_sm(tmp_path, fatal)  # a restart: pysyncobj replays its journal
    assert sm.applied_index == 5
    assert sm.apply(5, entry(put(b"k", b"replayed"))) is None
    assert get(sm, b"k") == b"first"
    results = sm.apply(6, entry(put(b"k", b"next")))
    assert results is not None
    sm.commit()
    assert get(sm, b"k") == b"next"
    sm.env.close()


def test_a_request_invalid_everywhere_is_an_error_result_and_the_rest_applies(
    tmp_path: Path,
) -> None:
    fatal: Fatal = []
    sm = open_sm(tmp_path, fatal)
    bad = envelope.put("no-such-table", b"k", b"v", True)
    results = sm.apply(2, entry(bad, put(b"ok"), envelope.next_job_id(), envelope.next_job_id()))
    sm.commit()
    assert results is not None
    assert "no-such-table" in results[0].error
    assert results[1].added
    assert [results[2].job_id, results[3].job_id] == [1, 2]
    assert get(sm, b"ok") == b"v"
    assert fatal == []
    sm.env.close()


def test_an_entry_it_cannot_read_is_fatal_and_rolls_back_the_tick(tmp_path: Path) -> None:
    fatal: Fatal = []
    sm = open_sm(tmp_path, fatal)
    sm.apply(2, entry(put(b"committed")))
    sm.commit()
    sm.apply(3, entry(put(b"same-tick")))
    newer = entry(put(b"never"), version=envelope.newest_version() + 1)
    assert sm.apply(4, newer) is None
    assert len(fatal) == 1 and isinstance(fatal[0][1], CorruptDataError)
    assert "upgrade this replica" in str(fatal[0][1])
    assert sm.applied_index == 2  # the open transaction was aborted with it
    sm.commit()
    assert get(sm, b"same-tick") is None and get(sm, b"never") is None
    sm.env.close()


def test_garbage_is_fatal(tmp_path: Path) -> None:
    fatal: Fatal = []
    sm = open_sm(tmp_path, fatal)
    assert sm.apply(2, b"\xff\xfe not a log entry") is None
    assert [what for what, _ in fatal] == ["cannot apply log entry 2"]
    assert sm.applied_index == 0
    sm.env.close()
