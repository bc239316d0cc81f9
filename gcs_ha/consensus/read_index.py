"""Linearizable reads without log entries (ReadIndex, Raft thesis 6.4), consensus side.

A READ from the front end asks: is this replica still the leader, and has it applied
everything that was committed when the read arrived? One heartbeat round answers it for
every read waiting at that moment:

1. `register`: the read joins the newest group while no AppendEntries has carried that
   group's tag yet, or opens a group with a new tag. The group's read index is the commit
   index at registration, and at least the no-op that opened the leader's term (a new
   leader learns the real commit index only by committing an entry of its own term).
2. Every AppendEntries carries the newest tag, and a follower echoes the tag of the message
   it answers; it answers only messages of a term it accepts as current (the patch layer's
   ``read_echo``).
3. `ready`: a group is confirmed once a majority, this node included, echoed its tag or a
   later one (so after the read arrived, a majority still followed this leader), and is
   ready once its read index is applied and committed to LMDB. The front end then reads
   its LMDB and sees every write acknowledged before the read arrived.

On leaving the leader role every waiting read fails (`fail_all`). Tags only grow, for the
life of the process, so an echo from an earlier term can never confirm a later read.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EVERY_TAG = sys.maxsize
"""What this node itself has 'echoed': it holds every tag it sent."""


@dataclass
class _Group:
    tag: int
    read_index: int
    ids: list[int] = field(default_factory=list)


class ReadIndex:
    """Reads waiting for their confirmation. Consensus thread only."""

    def __init__(self) -> None:
        self._groups: deque[_Group] = deque()
        self._last_tag = 0

    def __len__(self) -> int:
        return sum(len(group.ids) for group in self._groups)

    def register(self, request_id: int, read_index: int, newest_tag_sent: bool) -> int | None:
        """Add a read. Returns the tag of a new group (the caller puts it on the next
        AppendEntries and asks for one now), or None when it joined the open group."""
        if self._groups and not newest_tag_sent:
            group = self._groups[-1]
            group.ids.append(request_id)
            group.read_index = max(group.read_index, read_index)
            return None
        self._last_tag += 1
        self._groups.append(_Group(self._last_tag, read_index, [request_id]))
        return self._last_tag

    def ready(self, echoes: Mapping[str, int], voters: Sequence[str], applied: int) -> list[int]:
        """The ids of the reads that may now be answered, oldest first."""
        confirmed = majority_tag(echoes, voters)
        out: list[int] = []
        while self._groups:
            group = self._groups[0]
            if group.tag > confirmed or group.read_index > applied:
                break
            out += self._groups.popleft().ids
        return out

    def fail_all(self) -> list[int]:
        """Forget every waiting read; returns their ids."""
        out = [request_id for group in self._groups for request_id in group.ids]
        self._groups.clear()
        return out


def majority_tag(echoes: Mapping[str, int], voters: Sequence[str]) -> int:
    """The highest tag echoed by a majority of the cluster: this node (which holds every
    tag) and its other `voters`, whose highest echoes are in `echoes`."""
    needed_from_others = (len(voters) + 1) // 2  # a majority of n = len(voters) + 1, minus us
    if needed_from_others == 0:
        return EVERY_TAG
    tags = sorted((echoes.get(voter, 0) for voter in voters), reverse=True)
    return tags[needed_from_others - 1]
