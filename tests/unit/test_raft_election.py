"""Election and log matching on real pysyncobj nodes over the simulated network
(gcs_ha/testing/raft_sim.py): no sockets, simulated time, milliseconds per test."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.testing.raft_sim import RaftSim, cluster_names, iter_terms


def test_one_leader_per_term_through_leader_crashes(tmp_path: Path) -> None:
    with RaftSim(tmp_path, cluster_names(5), seed=1) as sim:
        sim.start_all()
        for round_ in range(6):
            leader = sim.elect()
            sim.write(leader, b"k%d" % round_, b"v")
            sim.stop(leader)
            sim.elect()
            sim.start(leader)
        sim.run_until(sim.converged, 2.0)
        leaders_of: dict[int, set[str]] = defaultdict(set)
        for term, name in iter_terms(sim.nodes.values()):
            leaders_of[term].add(name)
        assert len(leaders_of) >= 7  # every crash cost an election
        assert all(len(names) == 1 for names in leaders_of.values()), dict(leaders_of)
        assert len(set(sim.digests().values())) == 1


def test_a_partitioned_minority_elects_nobody(tmp_path: Path) -> None:
    names = cluster_names(5)
    with RaftSim(tmp_path, names, seed=2) as sim:
        sim.start_all()
        old = sim.elect()
        minority = [old, next(n for n in names if n != old)]
        majority = [n for n in names if n not in minority]
        sim.partition(minority, majority)
        cut_at = sim.now
        sim.run_until(lambda: set(sim.leaders()) & set(majority), 3.0)
        (new,) = set(sim.leaders()) & set(majority)
        sim.write(new, b"after-cut", b"1")
        sim.advance(5.0)  # many election timeouts for the minority
        became_leader = [
            node.name
            for node in sim.nodes.values()
            for at, _, state in node.roles
            if at > cut_at and state == ps.RAFT_LEADER
        ]
        assert became_leader == [new]
        assert not sim.nodes[old].raft.is_leader()  # type: ignore[union-attr]
        assert sim.nodes[old].get(b"after-cut") is None
        sim.heal()
        sim.run_until(lambda: sim.converged() and sim.leader() is not None, 3.0)
        assert all(node.get(b"after-cut") == b"1" for node in sim.nodes.values())


def test_a_divergent_tail_is_truncated_to_the_leaders_log(tmp_path: Path) -> None:
    with RaftSim(tmp_path, cluster_names(3), seed=3) as sim:
        sim.start_all()
        old = sim.elect()
        for i in range(5):
            sim.write(old, b"common%d" % i, b"v")
        sim.isolate(old)
        lost = [sim.propose(old, b"lost%d" % i, b"v") for i in range(3)]
        sim.step()
        tail = sim.nodes[old].log()[-3:]
        new = sim.elect()
        for i in range(5):
            sim.write(new, b"new%d" % i, b"v")
        assert all(entry not in sim.nodes[new].log() for entry in tail)  # diverged
        sim.heal()
        sim.run_until(sim.converged, 3.0)
        logs = {node.name: node.log() for node in sim.nodes.values()}
        assert logs[old] == logs[new]
        assert all(entry not in logs[old] for entry in tail)
        assert all(outcome.reason not in (None, ps.FAIL_REASON.SUCCESS) for outcome in lost)
        assert all(node.get(b"lost0") is None for node in sim.nodes.values())
        assert len(set(sim.digests().values())) == 1
