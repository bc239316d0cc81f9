"""LeaderHistory: what counts as a leader change, and what the status page gets."""

from __future__ import annotations

from gcs_ha.server.leader_history import MAX_CHANGES, LeaderHistory


def test_each_term_with_a_leader_counts_once() -> None:
    history = LeaderHistory()
    history.observe(None, 0, at=1.0)  # starting: no leader yet
    history.observe("", 1, at=2.0)  # elected before its registration committed
    history.observe("r1", 1, at=2.1)  # the same leader, named: not a new change
    history.observe("r1", 1, at=2.2)  # nothing new: not even recorded
    assert history.changes_seen == 1
    history.observe(None, 1, at=3.0)  # lost sight of it: recorded, not counted
    history.observe("r1", 1, at=3.5)  # back, same term
    history.observe("r2", 2, at=4.0)  # a new term, a new leader
    history.observe("r2", 3, at=5.0)  # re-elected in a later term: one more
    assert history.changes_seen == 3
    assert [(c.leader, c.term) for c in history.recent()] == [
        (None, 0),
        ("", 1),
        ("r1", 1),
        (None, 1),
        ("r1", 1),
        ("r2", 2),
        ("r2", 3),
    ]


def test_only_the_last_changes_are_kept() -> None:
    history = LeaderHistory()
    for term in range(1, MAX_CHANGES + 11):
        history.observe(f"r{term % 3}", term, at=float(term))
    recent = history.recent()
    assert len(recent) == MAX_CHANGES
    assert recent[0].term == 11 and recent[-1].term == MAX_CHANGES + 10
    assert history.changes_seen == MAX_CHANGES + 10
