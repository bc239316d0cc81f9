"""The status page's picture of recent leader changes: geometry for an inline SVG.

From this replica's leader history (leader_history.py), one bar on a linear time scale,
a segment per change, at least MIN_WIDTH wide; labels only where the text fits (CHAR_WIDTH
per character). This module only computes: the markup is in templates/status.html. How
it is drawn: DESIGN.md, "The status page".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gcs_ha.server.leader_history import LeaderChange

WIDTH = 960.0  # the SVG's viewBox width (it scales with the page)
MIN_WIDTH = 3.0  # the narrowest segment drawn
CHAR_WIDTH = 7.5  # the label font's average character width, in viewBox units
NO_LEADER = "url(#no-leader)"  # the hatch pattern the template defines
UNREGISTERED = "#8c959f"
PALETTE = (  # distinguishable with the common colour-vision deficiencies
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#7f7f00",
    "#4d4d4d",
)


@dataclass(frozen=True)
class Segment:
    """One change: drawn from `x`, `width` wide, filled with `fill`."""

    x: float
    width: float
    fill: str
    leader: str | None
    term: int
    title: str  # the tooltip: who, which term, from when, for how long
    label: str  # written above it: leader and term, the term, or nothing (no room)


@dataclass(frozen=True)
class Tick:
    """An axis label at `x`; `anchor` is SVG's text-anchor (start, middle, end)."""

    x: float
    text: str
    anchor: str


@dataclass(frozen=True)
class Timeline:
    """The picture: segments oldest first, axis ticks, and the span it covers (s)."""

    segments: list[Segment]
    ticks: list[Tick]
    span_s: float


def leader_colors(node_ids: Iterable[str]) -> dict[str, str]:
    """A colour per node id, by sorted id: the same on every page and every reload."""
    named = sorted({node for node in node_ids if node})
    return {node: PALETTE[i % len(PALETTE)] for i, node in enumerate(named)}


def leader_name(leader: str | None) -> str:
    """How a leader is named on the page: its node id, "no leader", or "unregistered"."""
    if leader is None:
        return "no leader"
    return leader or "unregistered"


def leader_fill(leader: str | None, colors: Mapping[str, str]) -> str:
    if leader is None:
        return NO_LEADER
    return colors.get(leader, UNREGISTERED)


def timeline(
    changes: Sequence[LeaderChange], now: float, colors: Mapping[str, str]
) -> Timeline | None:
    """The picture of `changes` (oldest first) up to `now`; None when there are none."""
    if not changes:
        return None
    start = changes[0].at
    end = max(now, changes[-1].at)
    span = end - start

    def x_of(at: float) -> float:
        return (at - start) / span * WIDTH if span > 0 else 0.0

    segments = []
    for i, change in enumerate(changes):
        last = i == len(changes) - 1
        until = end if last else changes[i + 1].at
        x0, x1 = x_of(change.at), WIDTH if last else x_of(until)
        width = max(x1 - x0, MIN_WIDTH)
        segments.append(
            Segment(
                x=min(x0, WIDTH - width),
                width=width,
                fill=leader_fill(change.leader, colors),
                leader=change.leader,
                term=change.term,
                title=_title(change, until, last),
                label=_label(change, width),
            )
        )
    return Timeline(segments, _ticks(start, end), span)


def _label(change: LeaderChange, width: float) -> str:
    who = leader_name(change.leader)
    for text in (f"{who} \u00b7 term {change.term}", f"term {change.term}"):
        if len(text) * CHAR_WIDTH + 4 <= width:
            return text
    return ""


def _title(change: LeaderChange, until: float, last: bool) -> str:
    who = "no leader" if change.leader is None else f"leader {leader_name(change.leader)}"
    since = clock(change.at)
    lasted = duration(until - change.at)
    if last:
        return f"{who}, term {change.term}: since {since} ({lasted})"
    return f"{who}, term {change.term}: {since} to {clock(until)} ({lasted})"


def _ticks(start: float, end: float) -> list[Tick]:
    if end - start <= 0:
        return [Tick(WIDTH, "now", "end")]
    with_date = end - start >= 86_400
    middle = (start + end) / 2
    return [
        Tick(0.0, clock(start, with_date), "start"),
        Tick(WIDTH / 2, clock(middle, with_date), "middle"),
        Tick(WIDTH, "now", "end"),
    ]


def clock(at: float, with_date: bool = False) -> str:
    """A Unix time as UTC wall-clock text."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.gmtime(at))


def duration(seconds: float) -> str:
    """A short human duration: 0.4 s, 12 s, 3 min 5 s, 2 h 10 min, 4 d 3 h."""
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    whole = int(s)
    for unit, size, sub_unit, sub_size in (
        ("d", 86_400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size} {unit} {whole % size // sub_size} {sub_unit}"
    return f"{whole} s"
