"""Fault records: what the nemesis did to the cluster, and when.

Times are time.monotonic() in the drill process, the same clock as the load's history
(gcs_ha.testing.kvload.Op.start/end), so a report can put faults and operations on one
timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "kill-leader",  # kill -9 of the serving leader, then a restart
    "kill-random",  # kill -9 of a random replica, then a restart
    "pause",  # SIGSTOP of a replica (longer than the election timeout), then SIGCONT
    "partition-leader",  # the leader cut off from every peer (Raft links), then healed
    "partition-split",  # one replica cut off from the others (a minority), then healed
    "powerloss",  # kill -9, drop what was not fsynced, restart
    "churn",  # a replica leaves the membership, its data is wiped, it joins again
]

FAULT_KINDS: tuple[FaultKind, ...] = (
    "kill-leader",
    "kill-random",
    "pause",
    "partition-leader",
    "partition-split",
    "powerloss",
    "churn",
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: injected at `start` on replicas `targets`, healed at `end`.

    `leader` is the replica that served as leader when the fault began (-1: unknown).
    `detail` is free text for the report (e.g. "r1 paused 1.2 s", "dropped 3 log bytes").
    `error` is set when the nemesis could not carry the fault out fully (the drill then
    reports it; the checks still run on the history).
    """

    kind: FaultKind
    targets: tuple[int, ...]
    start: float
    end: float
    leader: int = -1
    detail: str = ""
    error: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start
