"""DurableJournal: round trips, torn tails, corruption, truncation, compaction, meta, crash sim."""

from __future__ import annotations

import logging
import os
import random
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pysyncobj.journal import Journal, MemoryJournal

from gcs_ha.consensus.journal import (
    CRASH_SIM_ENV,
    HEADER_SIZE,
    RECORD_OVERHEAD,
    UNSAFE_SKIP_FSYNC_ENV,
    DurableJournal,
    commit_path,
    encode_record,
    meta_path,
    scan_log,
    synced_marker_path,
)
from gcs_ha.errors import ConfigError, CorruptDataError, StorageError
from gcs_ha.testing.powerloss import META_ABSENT, META_REMOVED, META_RESTORED, drop_unsynced

Entry = tuple[bytes, int, int]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "raft.journal"


@pytest.fixture
def crash_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_SIM_ENV, "1")
    monkeypatch.delenv(UNSAFE_SKIP_FSYNC_ENV, raising=False)


def make_entries(n: int, first: int = 1, term: int = 1, seed: int = 0) -> list[Entry]:
    rng = random.Random(seed)
    return [(rng.randbytes(rng.randrange(0, 300)), first + i, term) for i in range(n)]


def fill(journal: DurableJournal, entries: list[Entry]) -> None:
    for entry in entries:
        journal.add(*entry)


def reopen(path: Path) -> DurableJournal:
    return DurableJournal(path)


@pytest.fixture
def journal(log_path: Path) -> Iterator[DurableJournal]:
    j = DurableJournal(log_path)
    yield j
    j.close()


# ---------------------------------------------------------------- interface and round trip


def test_has_every_method_pysyncobj_calls() -> None:
    wanted = {n for n in vars(Journal) if not n.startswith("__")} | {"__getitem__", "__len__"}
    missing = [n for n in wanted if not callable(getattr(DurableJournal, n, None))]
    assert missing == []


def test_fresh_journal_is_empty(journal: DurableJournal, log_path: Path) -> None:
    assert len(journal) == 0
    assert journal.last_index == 0
    assert journal.getCurrentTerm() == 0
    assert journal.getVotedForNodeId() is None
    assert journal.getRaftCommitIndex() == 0
    assert not journal.dirty
    assert log_path.stat().st_size == HEADER_SIZE


def test_round_trip_across_reopen(journal: DurableJournal, log_path: Path) -> None:
    entries = [*make_entries(50), (b"", 51, 2), (os.urandom(200_000), 52, 2)]
    fill(journal, entries)
    assert journal.dirty
    assert journal.flush() is True
    assert not journal.dirty
    assert journal.flush() is False  # nothing new to sync
    journal.close()
    j = reopen(log_path)
    try:
        assert j[:] == entries
        assert len(j) == len(entries)
        assert j[0] == entries[0] and j[-1] == entries[-1]
        assert j[3:7] == entries[3:7] and j[-2:] == entries[-2:]
        assert j.last_index == 52
        j.add(b"after", 53, 3)
    finally:
        j.close()
    j = reopen(log_path)
    assert j[-1] == (b"after", 53, 3)
    j.close()


def test_same_meaning_as_pysyncobj_memory_journal(log_path: Path) -> None:
    """Random sequences of pysyncobj's calls leave the same log as its MemoryJournal."""
    rng = random.Random(7)
    ours, ref = DurableJournal(log_path), MemoryJournal()
    idx = 0
    for _ in range(400):
        op = rng.random()
        if op < 0.7 or len(ref) == 0:
            idx += 1
            entry = (rng.randbytes(rng.randrange(50)), idx, idx // 10)
            ours.add(*entry)
            ref.add(*entry)
        elif op < 0.85:
            pos = rng.randrange(len(ref) + 2)
            ours.deleteEntriesFrom(pos)
            ref.deleteEntriesFrom(pos)
            idx = ref[-1][1] if len(ref) else idx
        elif op < 0.98:
            pos = rng.randrange(len(ref) + 1)
            ours.deleteEntriesTo(pos)
            ref.deleteEntriesTo(pos)
        else:
            ours.clear()
            ref.clear()
        assert len(ours) == len(ref)
        if len(ref):
            assert ours[0] == ref[0] and ours[-1] == ref[-1]
    assert ours[:] == ref[:]
    ours.close()
    again = reopen(log_path)
    assert again[:] == ref[:]
    again.close()


def test_add_rejects_bad_arguments(journal: DurableJournal) -> None:
    journal.add(b"a", 5, 1)
    with pytest.raises(ValueError, match="does not follow"):
        journal.add(b"b", 5, 1)
    with pytest.raises(TypeError):
        journal.add("text", 6, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range"):
        journal.add(b"c", 6, -1)
    journal.add(bytearray(b"d"), 6, 1)
    assert journal[:] == [(b"a", 5, 1), (b"d", 6, 1)]


def test_closed_journal_refuses_writes(journal: DurableJournal) -> None:
    journal.close()
    journal.close()  # idempotent
    for call in (lambda: journal.add(b"x", 1, 1), journal.flush, journal.clear):
        with pytest.raises(StorageError, match="closed"):
            call()


# ------------------------------------------------------------------- torn tails and damage


def test_torn_tail_at_every_cut_point(journal: DurableJournal, log_path: Path) -> None:
    """Cutting the file anywhere keeps exactly the records that lie wholly before the cut."""
    entries = make_entries(12)
    fill(journal, entries)
    journal.close()
    data = log_path.read_bytes()
    ends = [HEADER_SIZE]
    for command, _, _ in entries:
        ends.append(ends[-1] + RECORD_OVERHEAD + len(command))
    assert ends[-1] == len(data)
    for cut in range(HEADER_SIZE, len(data) + 1):
        kept, _, valid_end = scan_log(data[:cut], log_path)
        whole = max(i for i, end in enumerate(ends) if end <= cut)
        assert kept == entries[:whole], cut
        assert valid_end == ends[whole]


@pytest.mark.parametrize("seed", range(6))
def test_torn_tail_is_cut_on_open(
    log_path: Path, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    entries = make_entries(30, seed=seed)
    j = DurableJournal(log_path)
    fill(j, entries)
    j.close()
    data = log_path.read_bytes()
    rng = random.Random(seed)
    cut = rng.randrange(HEADER_SIZE + 1, len(data))
    tail = rng.choice([b"", b"\0" * rng.randrange(1, 600), rng.randbytes(rng.randrange(1, 600))])
    log_path.write_bytes(data[:cut] + tail)
    with caplog.at_level(logging.WARNING):
        j = reopen(log_path)
    kept = len(j)
    assert j[:] == entries[:kept]
    expected_end = HEADER_SIZE + sum(RECORD_OVERHEAD + len(e[0]) for e in entries[:kept])
    assert log_path.stat().st_size == expected_end
    if expected_end != len(data[:cut] + tail):
        assert "torn tail" in caplog.text
    j.add(b"next", kept + 1, 1)  # appends continue right after the cut
    j.close()
    j = reopen(log_path)
    assert j[-1] == (b"next", kept + 1, 1)
    j.close()


def test_crc_bad_last_record_is_a_torn_tail(journal: DurableJournal, log_path: Path) -> None:
    fill(journal, make_entries(5))
    journal.close()
    data = bytearray(log_path.read_bytes())
    data[-3] ^= 0xFF
    log_path.write_bytes(bytes(data))
    j = reopen(log_path)
    assert len(j) == 4
    j.close()


def _record_offsets(entries: list[Entry]) -> list[int]:
    offsets = [HEADER_SIZE]
    for command, _, _ in entries:
        offsets.append(offsets[-1] + RECORD_OVERHEAD + len(command))
    return offsets


@pytest.mark.parametrize("field_offset", [0, 2, 4, 8, 16, 24, 27, -1])
def test_flipped_byte_mid_file_is_corruption(log_path: Path, field_offset: int) -> None:
    """A damaged record followed by valid ones is not a torn tail: refuse to open."""
    entries = [(b"payload-%d" % i * 3, i + 1, 1) for i in range(10)]
    j = DurableJournal(log_path)
    fill(j, entries)
    j.close()
    offsets = _record_offsets(entries)
    start, end = offsets[4], offsets[5]
    where = (end if field_offset < 0 else start) + field_offset  # -1: last byte (CRC)
    data = bytearray(log_path.read_bytes())
    data[where] ^= 0x5A
    log_path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError) as err:
        DurableJournal(log_path)
    assert str(log_path) in str(err.value)
    assert f"offset {start}" in str(err.value)
    assert log_path.read_bytes() == bytes(data)  # nothing was cut


def test_random_flips_never_open_silently_shorter(log_path: Path) -> None:
    """Fuzz: a flip anywhere either raises or (only in the last record) cuts that record."""
    entries = make_entries(15, seed=3)
    j = DurableJournal(log_path)
    fill(j, entries)
    j.close()
    clean = log_path.read_bytes()
    last_start = _record_offsets(entries)[-2]
    rng = random.Random(11)
    for where in rng.sample(range(len(clean)), 150):
        data = bytearray(clean)
        data[where] ^= 1 << rng.randrange(8)
        try:
            kept, _, _ = scan_log(bytes(data), log_path)
        except CorruptDataError:
            continue
        assert where >= last_start, where
        assert kept == entries[:-1]


def test_bad_header_and_version(log_path: Path) -> None:
    for content in (b"", b"GCSH", b"NOTAJRNL" + bytes(8), b"GCSHARJL\x02\0\0\0\0\0\0\0"):
        log_path.write_bytes(content)
        with pytest.raises(CorruptDataError, match=r"offset (0|8)"):
            DurableJournal(log_path)


def test_non_monotonic_index_is_corruption(log_path: Path) -> None:
    j = DurableJournal(log_path)
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 1)
    j.close()
    second = HEADER_SIZE + RECORD_OVERHEAD + 1
    with log_path.open("ab") as f:
        f.write(encode_record(b"c", 2, 1))
    with pytest.raises(CorruptDataError, match=f"offset {second + RECORD_OVERHEAD + 1}"):
        DurableJournal(log_path)


# ------------------------------------------------------------- truncation and compaction


def test_delete_entries_from_then_reopen(journal: DurableJournal, log_path: Path) -> None:
    entries = make_entries(20)
    fill(journal, entries)
    journal.deleteEntriesFrom(25)  # beyond the end: nothing to do
    assert len(journal) == 20
    journal.deleteEntriesFrom(12)
    assert journal[:] == entries[:12]
    assert not journal.dirty  # truncation is synced
    journal.deleteEntriesFrom(-2)  # list semantics, like pysyncobj's MemoryJournal
    assert journal[:] == entries[:10]
    journal.add(b"new", 11, 2)
    journal.close()
    j = reopen(log_path)
    assert j[:] == [*entries[:10], (b"new", 11, 2)]
    assert log_path.stat().st_size == _record_offsets(j[:])[-1]
    j.close()


def test_delete_entries_to_then_reopen(journal: DurableJournal, log_path: Path) -> None:
    entries = make_entries(20)
    fill(journal, entries)
    journal.deleteEntriesTo(0)
    assert len(journal) == 20
    journal.deleteEntriesTo(15)
    assert journal[:] == entries[15:]
    assert journal[0][1] == 16  # positions restart at 0 after compaction
    journal.add(b"more", 21, 1)
    journal.deleteEntriesFrom(5)  # offsets are right in the rewritten file
    journal.add(b"again", 21, 2)
    journal.close()
    j = reopen(log_path)
    assert j[:] == [*entries[15:], (b"again", 21, 2)]
    assert not (log_path.parent / "raft.journal.tmp").exists()
    j.clear()
    assert len(j) == 0
    j.add(b"snap-prev", 40, 3)
    j.close()
    j = reopen(log_path)
    assert j[:] == [(b"snap-prev", 40, 3)]
    j.close()


def test_leftover_temp_files_are_removed(log_path: Path) -> None:
    j = DurableJournal(log_path)
    j.add(b"a", 1, 1)
    j.close()
    (log_path.parent / "raft.journal.tmp").write_bytes(b"half a rewrite")
    (log_path.parent / "raft.journal.meta.tmp").write_bytes(b"half a meta")
    j = reopen(log_path)
    assert j[:] == [(b"a", 1, 1)]
    assert sorted(p.name for p in log_path.parent.iterdir()) == ["raft.journal"]
    j.close()


# ----------------------------------------------------------------------- meta and commit


def test_term_and_vote_survive_reopen(journal: DurableJournal, log_path: Path) -> None:
    journal.setCurrentTerm(4, "127.0.0.1:23001")
    journal.setCurrentTerm(5, None)
    journal.close()
    j = reopen(log_path)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (5, None)
    j.setCurrentTerm(6, "127.0.0.1:23002")
    j.close()
    j = reopen(log_path)
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (6, "127.0.0.1:23002")
    j.close()


@pytest.mark.parametrize(
    "content", [b"", b"\x80\x02}q\x00.", b'{"format":1,"term":3,"voted_for":null}\n00000000\n']
)
def test_damaged_meta_is_corruption(log_path: Path, content: bytes) -> None:
    DurableJournal(log_path).close()
    meta_path(log_path).write_bytes(content)
    with pytest.raises(CorruptDataError, match=r"raft\.journal\.meta"):
        DurableJournal(log_path)


def test_commit_index_is_lazy_and_clamped(journal: DurableJournal, log_path: Path) -> None:
    fill(journal, make_entries(10))
    journal.setRaftCommitIndex(8)
    assert journal.getRaftCommitIndex() == 8
    assert not commit_path(log_path).exists()  # written by the one-second timer only
    journal.onOneSecondTimer()
    assert commit_path(log_path).exists()
    journal.deleteEntriesFrom(5)
    assert journal.getRaftCommitIndex() == 5  # never beyond the last entry
    journal.close()
    j = reopen(log_path)
    assert j.getRaftCommitIndex() == 5
    j.setRaftCommitIndex(3)
    j.close()  # close writes the commit index too
    j = reopen(log_path)
    assert j.getRaftCommitIndex() == 3
    j.close()
    commit_path(log_path).write_bytes(b"garbage")
    j = reopen(log_path)
    assert j.getRaftCommitIndex() == 1  # unreadable: pysyncobj's default
    j.close()


# ----------------------------------------------------------------------- I/O failure


def test_write_error_poisons_the_journal(log_path: Path) -> None:
    """A real EFBIG (file size limit) on append: StorageError now and for every later write."""
    j = DurableJournal(log_path)
    fill(j, make_entries(3))
    j.flush()
    size = log_path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
        with pytest.raises(StorageError, match="append"):
            j.add(b"x" * 1000, 4, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    with pytest.raises(StorageError, match="unusable"):
        j.add(b"y", 4, 1)
    with pytest.raises(StorageError):
        j.flush()
    j.close()
    again = reopen(log_path)  # the partial record is a torn tail
    assert again[:] == make_entries(3)
    again.close()


# ------------------------------------------------------------------------- crash sim


@pytest.mark.usefixtures("crash_sim")
def test_power_loss_keeps_flushed_and_drops_the_rest(log_path: Path) -> None:
    entries = make_entries(30)
    j = DurableJournal(log_path)
    fill(j, entries[:20])
    j.flush()
    fill(j, entries[20:])  # written, never flushed (so never acknowledged)
    j.setRaftCommitIndex(25)
    j.close()
    report = drop_unsynced(log_path)
    assert report.log_bytes_dropped == sum(RECORD_OVERHEAD + len(e[0]) for e in entries[20:])
    assert not report.log_removed and not report.stale_marker
    assert not commit_path(log_path).exists()
    j = reopen(log_path)
    assert j[:] == entries[:20]
    assert j.getRaftCommitIndex() == 1
    j.close()


@pytest.mark.usefixtures("crash_sim")
def test_power_loss_keeps_truncation_compaction_and_votes(log_path: Path) -> None:
    entries = make_entries(30)
    j = DurableJournal(log_path)
    fill(j, entries)
    j.deleteEntriesFrom(25)  # durable on return, and syncs what precedes it
    j.deleteEntriesTo(5)  # durable on return
    j.setCurrentTerm(7, "node-b")
    j.add(b"lost", 26, 7)
    j.close()
    report = drop_unsynced(log_path)
    assert report.meta == META_RESTORED
    j = reopen(log_path)
    assert j[:] == entries[5:25]
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (7, "node-b")
    j.close()


@pytest.mark.usefixtures("crash_sim")
def test_power_loss_without_any_vote_removes_meta_copy_state(log_path: Path) -> None:
    j = DurableJournal(log_path)
    j.add(b"a", 1, 0)
    j.close()
    report = drop_unsynced(log_path)
    assert report.meta == META_ABSENT
    assert report.log_bytes_after == HEADER_SIZE
    j = reopen(log_path)
    assert len(j) == 0
    j.close()


def test_drop_unsynced_refuses_untracked_journal(log_path: Path) -> None:
    j = DurableJournal(log_path)
    j.add(b"a", 1, 1)
    j.close()
    with pytest.raises(ConfigError, match="CRASH_SIM"):
        drop_unsynced(log_path)
    assert log_path.stat().st_size > HEADER_SIZE


@pytest.mark.usefixtures("crash_sim")
def test_unsafe_switch_loses_everything_after_the_last_sync(
    log_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without fsync, a power loss takes acknowledged entries and term/vote with it."""
    safe = make_entries(10)
    j = DurableJournal(log_path)
    fill(j, safe)
    j.flush()
    j.setCurrentTerm(2, "node-a")
    j.close()

    monkeypatch.setenv(UNSAFE_SKIP_FSYNC_ENV, "1")
    with caplog.at_level(logging.WARNING):
        j = reopen(log_path)
    assert "NEVER fsync" in caplog.text
    fill(j, make_entries(10, first=11, term=3))
    assert j.flush() is False  # "flushed", but nothing reached the disk
    assert not j.dirty
    j.deleteEntriesFrom(15)
    j.setCurrentTerm(3, "node-c")
    j.close()
    report = drop_unsynced(log_path)
    assert report.meta == META_RESTORED

    monkeypatch.delenv(UNSAFE_SKIP_FSYNC_ENV)
    j = reopen(log_path)
    assert j[:] == safe
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (2, "node-a")
    j.close()


@pytest.mark.usefixtures("crash_sim")
def test_unsafe_switch_from_scratch_leaves_nothing(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UNSAFE_SKIP_FSYNC_ENV, "1")
    j = DurableJournal(log_path)
    fill(j, make_entries(5))
    j.flush()
    j.setCurrentTerm(1, "me")
    j.close()
    report = drop_unsynced(log_path)
    assert report.log_removed and report.meta == META_REMOVED
    assert not log_path.exists() and not meta_path(log_path).exists()
    monkeypatch.delenv(UNSAFE_SKIP_FSYNC_ENV)
    j = DurableJournal(log_path)
    assert (len(j), j.getCurrentTerm(), j.getVotedForNodeId()) == (0, 0, None)
    j.close()


@pytest.mark.usefixtures("crash_sim")
def test_marker_tracks_real_syncs_only(log_path: Path) -> None:
    j = DurableJournal(log_path)
    marker = synced_marker_path(log_path)
    first = marker.read_bytes()
    j.add(b"a", 1, 1)
    assert marker.read_bytes() == first  # add alone does not move the marker
    j.flush()
    assert marker.read_bytes() != first
    j.close()
