"""CPU time of the servers a benchmark measures, read from /proc, and by replica role.

A replica is two processes (the `gcs-ha start` front end and its consensus child);
`RoleCpu` splits a cluster's CPU into leader_frontend, leader_consensus and follower (the
mean over followers), so a row can say what one operation costs each role.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROLES = ("leader_frontend", "leader_consensus", "follower")
ROLE_TITLES = ("LEAD FE", "LEAD CONS", "FOLLOWER")
"""Table headers of the `<role>_cpu_ms_per_op` columns, in ROLES order."""


def child_pids(pid: int) -> list[int]:
    """The children of process `pid` (its consensus process, for a replica)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _stat_cpu_s(path: str) -> float | None:
    """utime + stime in seconds from a /proc stat file; None when it is gone."""
    try:
        with open(path) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) of process `pid` so far; 0 when gone."""
    return _stat_cpu_s(f"/proc/{pid}/stat") or 0.0


def thread_cpu(pids: Iterable[int]) -> dict[str, float]:
    """CPU seconds so far of every thread of `pids` and of their children, keyed
    "pid/tid comm"; threads that vanish while being read are skipped."""
    out: dict[str, float] = {}
    for pid in pids:
        for proc in (pid, *child_pids(pid)):
            task_dir = f"/proc/{proc}/task"
            try:
                tids = os.listdir(task_dir)
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"{task_dir}/{tid}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                seconds = _stat_cpu_s(f"{task_dir}/{tid}/stat")
                if seconds is not None:
                    out[f"{proc}/{tid} {comm}"] = seconds
    return out


@dataclass(frozen=True)
class Replica:
    """One replica to account for: the pid of its front end, whether it leads, and the pid
    of its consensus process (None: the front end's children, found at construction)."""

    pid: int
    leader: bool
    consensus_pid: int | None = None


class RoleCpu:
    """Samples a cluster's CPU by role (module docstring). The consensus processes are
    found once, at construction: build it after the cluster started."""

    def __init__(self, replicas: Iterable[Replica]) -> None:
        self._replicas = [
            (r, [r.consensus_pid] if r.consensus_pid is not None else child_pids(r.pid))
            for r in replicas
        ]
        self.followers = sum(1 for r, _ in self._replicas if not r.leader)

    def sample(self) -> dict[str, float]:
        """CPU seconds so far of each role (followers summed)."""
        out = dict.fromkeys(ROLES, 0.0)
        for replica, children in self._replicas:
            front = process_cpu_s(replica.pid)
            consensus = sum(process_cpu_s(c) for c in children)
            if replica.leader:
                out["leader_frontend"] += front
                out["leader_consensus"] += consensus
            else:
                out["follower"] += front + consensus
        return out

    def per_op(
        self, before: Mapping[str, float], after: Mapping[str, float], ops: float
    ) -> dict[str, float | None]:
        """`<role>_cpu_ms_per_op` for the window between two samples with `ops` operations
        (the follower's is the mean over followers)."""
        out: dict[str, float | None] = {}
        for role in ROLES:
            used = after[role] - before[role]
            if role == "follower":
                if not self.followers:
                    out[f"{role}_cpu_ms_per_op"] = None
                    continue
                used /= self.followers
            out[f"{role}_cpu_ms_per_op"] = round(used * 1000.0 / ops, 4) if ops else None
        return out


def role_cells(row: Mapping[str, object]) -> tuple[str, ...]:
    """A result row's CPU ms per op by role, as table cells ("-" where there is none)."""
    cells = []
    for role in ROLES:
        value = row.get(f"{role}_cpu_ms_per_op")
        cells.append(f"{value:.3f}" if isinstance(value, int | float) else "-")
    return tuple(cells)
