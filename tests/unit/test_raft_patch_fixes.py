"""The patch layer's fixes of pysyncobj (docs/pysyncobj-patches.md), each scenario run with
the fix on and off, on real nodes over the simulated network (gcs_ha/testing/raft_sim.py).
The TCP versions of these tests are in tests/integration/test_pysyncobj_patches.py."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.consensus import envelope
from gcs_ha.consensus.config import RaftTiming
from gcs_ha.errors import InvalidRequestError
from gcs_ha.storage.store_client import KV_TABLE
from gcs_ha.testing.raft_sim import MemoryJournal, RaftSim, SimTimeout, cluster_names


@contextlib.contextmanager
def patches(names: tuple[str, ...], enabled: bool) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(ps.patch_enabled(name, enabled))
        yield


def _diverge(sim: RaftSim) -> str:
    """Leave the old leader down with 30 entries of its own term that nobody else has,
    while the others commit 300 more and elect a leader whose log is far ahead of it
    (so its first probe misses by many append batches). Returns the old leader."""
    sim.start_all()
    old = sim.elect()
    sim.write(old, b"common", b"v")
    sim.isolate(old)
    for i in range(30):
        sim.propose(old, b"lost%d" % i, b"x" * 100)
    sim.step()
    sim.stop(old)
    sim.heal()
    rest = [n for n in sim.nodes if n != old]
    new = sim.elect()
    outcomes = [sim.propose(new, b"k%d" % i, b"y" * 100) for i in range(300)]
    sim.run_until(lambda: all(o.ok for o in outcomes), 2.0)
    sim.stop(new)  # a new election: its leader's nextIndex starts past the old tail
    sim.start(new)
    sim.run_until(lambda: sim.leader() in rest and sim.converged(rest), 3.0)
    sim.start(old)
    return old


@pytest.mark.parametrize("fixed", [True, False])
def test_b1_a_follower_with_a_divergent_tail_converges(tmp_path: Path, fixed: bool) -> None:
    with (
        patches(("b1_probe_floor", "b1_conflict_hint"), fixed),
        RaftSim(tmp_path, cluster_names(3), seed=4, batch_size_bytes=2048) as sim,
    ):
        old = _diverge(sim)
        if fixed:
            took = sim.run_until(sim.converged, 2.0)
            assert took < 0.5
            assert sim.nodes[old].get(b"k299") == b"y" * 100
            assert sim.nodes[old].get(b"lost0") is None
        else:  # the leader's probe is undone by the replies to its pipelined batches
            with pytest.raises(SimTimeout):
                sim.run_until(sim.converged, 3.0)
            assert sim.nodes[old].get(b"k0") is None  # not one entry of the new term


def _pipelined_writes(sim: RaftSim) -> None:
    """20 new writes per tick for 30 ticks, acks 10 ms behind (5 ms each way)."""
    leader = sim.elect()
    for a in sim.nodes:
        for b in sim.nodes:
            sim.delays[(a, b)] = 0.005
    outcomes = []
    for wave in range(30):
        outcomes += [sim.propose(leader, b"k%d-%d" % (wave, i), b"v") for i in range(20)]
        sim.step()
    sim.run_until(lambda: all(o.ok for o in outcomes), 2.0)
    sim.run_until(sim.converged, 1.0)


@pytest.mark.parametrize("fixed", [True, False])
def test_b2_followers_never_drop_entries_they_acknowledged(tmp_path: Path, fixed: bool) -> None:
    with (
        ps.patch_enabled("b2_monotonic_next", fixed),
        RaftSim(tmp_path, cluster_names(3), seed=5) as sim,
    ):
        sim.start_all()
        _pipelined_writes(sim)
        leader = sim.leader()
        cuts = [
            node.journal.cuts_below_flushed
            for node in sim.nodes.values()
            if node.name != leader and isinstance(node.journal, MemoryJournal)
        ]
        assert len(cuts) == 2
        if fixed:
            assert cuts == [0, 0]
        else:
            assert min(cuts) > 0  # acknowledged entries truncated, then sent again
        assert len(set(sim.digests().values())) == 1


def _command_overhead(sim: RaftSim, leader: str) -> int:
    """Bytes pysyncobj adds around an entry's data in its log command."""
    data = envelope.encode([envelope.put(KV_TABLE, b"calibrate", b"c" * 1000, True)])
    sim.write(leader, b"calibrate", b"c" * 1000)
    return len(sim.nodes[leader].log_commands()[-1]) - len(data)


def _data_of_command_size(size: int, overhead: int) -> bytes:
    """Entry data whose command is `size` bytes (value length found by trying)."""
    for value_len in range(size - overhead - 40, size - overhead):
        data = envelope.encode([envelope.put(KV_TABLE, b"big", b"b" * value_len, True)])
        if len(data) + overhead == size:
            return data
    raise AssertionError("no value length gives that command size")


@pytest.mark.parametrize("fixed", [True, False])
def test_b3_an_entry_as_large_as_a_batch_is_never_corrupted(tmp_path: Path, fixed: bool) -> None:
    batch = 4096
    with (
        ps.patch_enabled("b3_entry_guard", fixed),
        RaftSim(tmp_path, cluster_names(3), seed=6, batch_size_bytes=batch, strict=False) as sim,
    ):
        sim.start_all()
        leader = sim.elect()
        data = _data_of_command_size(2 * batch - 8, _command_overhead(sim, leader))
        raft = sim.nodes[leader].raft
        assert raft is not None
        if fixed:
            with pytest.raises(InvalidRequestError):
                raft.propose(data, lambda result, reason: None)
            sim.advance(0.2)
            assert sim.errors == []
        else:  # the 'finish' chunk is sent one chunk early: the follower unpickles a stump
            raft.propose(data, lambda result, reason: None)
            sim.advance(0.2)
            failed = {name for name, exc in sim.errors if isinstance(exc, pickle.UnpicklingError)}
            assert failed == set(sim.nodes) - {leader}


@pytest.mark.parametrize("fixed", [True, False])
def test_leader_gone_a_follower_stands_when_the_leaders_link_closes(
    tmp_path: Path, fixed: bool
) -> None:
    timing = RaftTiming(election_min_s=3.0, election_max_s=4.0, leader_fallback_s=4.0)
    names = cluster_names(3)
    with (
        ps.patch_enabled("leader_gone", fixed),
        RaftSim(tmp_path, names, seed=7, timing=timing) as sim,
    ):
        sim.start_all()
        old = sim.elect(within=10.0)
        sim.advance(0.5)
        sim.stop(old)  # its process died: its kernel closes its links at once
        died = sim.now
        first = sorted(n for n in names if n != old)[0]
        if fixed:  # the first survivor by address stands within 10-30 ms
            sim.run_until(lambda: sim.leader() is not None, 0.2)
            assert sim.leader() == first
            (stood,) = [at for at, _, state in sim.nodes[first].roles if at > died][:1]
            bound = ps.LEADER_GONE_FIRST_S + ps.LEADER_GONE_JITTER_S + sim.tick_s
            assert stood - died <= bound
        else:  # nobody stands before the election timeout
            sim.advance(2.0)
            assert sim.leader() is None
            took = sim.run_until(lambda: sim.leader() is not None, 3.0)
            assert took + 2.0 >= timing.election_min_s - timing.heartbeat_s - sim.tick_s
