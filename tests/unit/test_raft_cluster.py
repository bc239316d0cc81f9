"""Check-quorum, membership changes and snapshot install on real nodes over the simulated
network (gcs_ha/testing/raft_sim.py): our settings, journal, state machine and
Snapshotter, no sockets, simulated time."""

from __future__ import annotations

from pathlib import Path

from gcs_ha.consensus import _pysyncobj as ps
from gcs_ha.testing.raft_sim import Outcome, RaftSim, cluster_names


def test_an_isolated_leader_steps_down_after_leader_fallback(tmp_path: Path) -> None:
    with RaftSim(tmp_path, cluster_names(3), seed=8) as sim:
        sim.start_all()
        leader = sim.elect()
        sim.advance(1.0)  # steady heartbeats
        assert sim.leader() == leader
        sim.isolate(leader)
        fallback, heartbeat = sim.timing.leader_fallback_s, sim.timing.heartbeat_s
        raft = sim.nodes[leader].raft
        assert raft is not None
        took = sim.run_until(lambda: not raft.is_leader(), 2.0)
        # its last answer came at most one heartbeat before the cut
        assert fallback - heartbeat - sim.tick_s <= took <= fallback + 2 * sim.tick_s
        assert any(name != leader for name in sim.leaders())  # the majority elected


def test_a_node_added_catches_up_and_a_node_removed_is_no_longer_counted(
    tmp_path: Path,
) -> None:
    a, b, c, d = cluster_names(4)
    with RaftSim(tmp_path, [a, b, c], seed=9) as sim:
        sim.start_all()
        leader = sim.elect()
        for i in range(10):
            sim.write(leader, b"k%d" % i, b"v")
        sim.start(d, peers=[a, b, c], joining=True)
        sim.advance(1.0)  # not a member yet: nobody talks to it, it never stands
        assert sim.nodes[d].obj.raftCurrentTerm == 0
        added = Outcome()
        sim.nodes[leader].raft.add_node(d, added)  # type: ignore[union-attr]
        sim.run_until(lambda: added.reason is not None and sim.converged(), 2.0)
        assert added.ok
        assert sim.nodes[d].get(b"k9") == b"v"
        assert sorted(sim.nodes[leader].raft.voters()) == sorted({a, b, c, d} - {leader})  # type: ignore[union-attr]

        gone = next(n for n in (a, b, c) if n != leader)
        removed = Outcome()
        sim.nodes[leader].raft.remove_node(gone, removed)  # type: ignore[union-attr]
        sim.run_until(lambda: removed.reason is not None, 2.0)
        assert removed.ok
        sim.stop(gone)
        third = next(n for n in (a, b, c) if n not in (leader, gone))
        sim.stop(third)  # with `gone` still counted, 2 of 4 could not commit
        sim.write(leader, b"after", b"v")  # committed by the leader and d: 2 of 3
        sim.run_until(sim.converged, 1.0)
        assert sim.nodes[d].get(b"after") == b"v"
        assert gone not in sim.nodes[d].raft.voters()  # type: ignore[union-attr]


def test_a_lagging_follower_receives_the_leaders_snapshot(tmp_path: Path) -> None:
    with RaftSim(tmp_path, cluster_names(3), seed=10, snapshots=True) as sim:
        sim.start_all()
        leader = sim.elect()
        lagging = next(n for n in sim.nodes if n != leader)
        for i in range(5):
            sim.write(leader, b"k%d" % i, b"v%d" % i)
        sim.stop(lagging)
        for i in range(5, 25):
            sim.write(leader, b"k%d" % i, b"v%d" % i)
        raft = sim.nodes[leader].raft
        assert raft is not None
        raft.force_compaction()
        first = sim.nodes[leader].log
        sim.run_until(lambda: first()[0][0] > 10, 1.0)  # compacted past the lagging log
        behind = sim.nodes[lagging].last()[0]
        assert first()[0][0] > behind + 1
        sim.start(lagging)
        sim.run_until(sim.converged, 2.0)
        snapshotter = sim.nodes[lagging].snapshotter
        assert snapshotter is not None and snapshotter.last_snapshot_index > behind
        assert sim.nodes[lagging].get(b"k24") == b"v24"
        assert len(set(sim.digests().values())) == 1
        sim.write(leader, b"after", b"v")  # and it goes on from there
        sim.run_until(sim.converged, 1.0)
        assert sim.nodes[lagging].get(b"after") == b"v"
        assert ps.is_enabled("durable_snapshot_receive")
