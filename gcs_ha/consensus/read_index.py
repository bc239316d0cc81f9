"""Linearizable reads without log entries (ReadIndex, Raft thesis 6.4), consensus side.

A READ from the front end asks: is this replica still the leader, and has it applied
everything committed when the read arrived? `register` puts a read in a group with a tag
and a read index; `ready` gives the groups a majority confirmed (echoed their tag or a
later one) whose read index is applied and committed to LMDB; `fail_all` fails every
waiting read when this replica stops leading. Mechanism: DESIGN.md, "Reads (ReadIndex)".
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
