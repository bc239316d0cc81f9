"""The leaders this replica has seen, for metrics and the status page.

`observe(leader, term)` is called whenever this replica's view of the leader changes
(gcs_server.py follows it every POLL_S). Every term with a leader seen, the first one
included, counts as one leader change (`gcs_ha_server_leader_changes_seen_total`, as
etcd counts them): a term has one leader at most, so a leader seen first without its
name ("": elected before its registration committed) and then named is one change.
Losing sight of the leader (None) is recorded but not counted. The last MAX_CHANGES
observations are kept, with their wall-clock time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

MAX_CHANGES = 100


@dataclass(frozen=True)
class LeaderChange:
    """From `at` (Unix time, seconds) on, this replica saw `leader` (None: no leader)."""

    at: float
    leader: str | None
    term: int


class LeaderHistory:
    """See the module docstring."""

    def __init__(self) -> None:
        self.changes_seen = 0
        self._last_term: int | None = None
        self._recent: deque[LeaderChange] = deque(maxlen=MAX_CHANGES)

    def observe(self, leader: str | None, term: int, at: float | None = None) -> None:
        """Record what this replica sees now (no-op when nothing changed)."""
        recent = self._recent
        if recent and recent[-1].leader == leader and recent[-1].term == term:
            return
        if leader is not None and term != self._last_term:
            self.changes_seen += 1
            self._last_term = term
        recent.append(LeaderChange(time.time() if at is None else at, leader, term))

    def recent(self) -> list[LeaderChange]:
        """The kept observations, oldest first."""
        return list(self._recent)
