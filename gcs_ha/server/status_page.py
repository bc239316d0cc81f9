"""The status page: the cluster at a glance, as HTML for people.

`render(page)` fills templates/status.html with Jinja2, autoescaping on: the leader and
its term, the health `gcs-ha status` would report, the members, this replica's recent
leader changes (status_timeline.py) and its own store use. Self-contained (no script, no
external resource), reloaded every REFRESH_S seconds. Decisions: DESIGN.md, "The status
page".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from gcs_ha import __version__
from gcs_ha.cluster_view import DEGRADED, HEALTHY, ClusterView, MemberView
from gcs_ha.consensus.api import StoreUse
from gcs_ha.server.leader_history import LeaderChange
from gcs_ha.server.status_timeline import (
    clock,
    duration,
    leader_colors,
    leader_fill,
    leader_name,
    timeline,
)

REFRESH_S = 5
RECENT_ROWS = 8  # leader changes listed under the picture
REFUSE_ABOVE = 7 / 8  # the capacity guard refuses writes above this map use
WARN_ABOVE = 0.8  # the map use the alert rules warn at (GcsHaStoreNearlyFull)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("gcs_ha.server", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_HEALTH = {  # gcs-ha status's exit code -> (word, css class, meaning)
    HEALTHY: ("healthy", "ok", "a leader serves and every member answers"),
    DEGRADED: ("degraded", "warn", "a leader serves; some member does not answer"),
}
_NO_LEADER = ("no leader", "bad", "no member serves: Ray's calls wait for a leader")


@dataclass(frozen=True)
class StatusPage:
    """What the page shows, gathered by the listener (http_endpoint.py)."""

    node_id: str  # the replica serving the page
    cluster_name: str
    view: ClusterView  # every member's answer (cluster_status.py)
    changes: Sequence[LeaderChange]  # this replica's leader history, oldest first
    store: StoreUse | None  # this replica's store; None when it cannot be measured
    store_error: str  # why not, when store is None
    ready: bool  # this replica answers Ray's calls (serves or forwards)
    now: float  # Unix time


def render(page: StatusPage) -> str:
    """The page's HTML."""
    view = page.view
    leaders = [c.leader for c in page.changes if c.leader is not None]
    colors = leader_colors([*(m.id for m in view.members if m.id), *leaders])
    health, health_class, health_note = _HEALTH.get(view.health(), _NO_LEADER)
    pictured = timeline(page.changes, page.now, colors)
    return _ENV.get_template("status.html").render(
        page=page,
        version=__version__,
        refresh_s=REFRESH_S,
        now=clock(page.now, with_date=True),
        leader=view.leader,
        leader_term=_leader_term(view),
        leader_reachable=view.leader_reachable(),
        health=health,
        health_class=health_class,
        health_note=health_note,
        members=[_member_row(m, page.node_id, view.leader, colors) for m in view.members],
        timeline=pictured,
        span=duration(pictured.span_s) if pictured else "",
        legend=_legend(page.changes, colors),
        recent=_recent(page.changes, page.now),
        store=_store(page.store),
    )


def _leader_term(view: ClusterView) -> int | None:
    """The leader's term: its own answer, else the newest term any member answered."""
    mine = [m.term for m in view.members if m.id == view.leader and m.role == "leader"]
    terms = mine or [m.term for m in view.members if m.term is not None]
    return max((t for t in terms if t is not None), default=None)


def _member_row(
    m: MemberView, self_id: str, leader: str | None, colors: dict[str, str]
) -> dict[str, Any]:
    if not m.reachable:
        state = "unreachable"
    elif m.role == "leader" and m.id == leader:
        state = "leader"
    else:
        state = m.role or "unknown"
    return {
        "id": m.id,
        "name": m.id or f"(unregistered, Raft {m.raft_address})",
        "state": state,
        "term": _or_dash(m.term),
        "lag": _or_dash(m.lag),
        "applied": _or_dash(m.applied_index),
        "gcs_address": m.gcs_address,
        "raft_address": m.raft_address,
        "color": colors.get(m.id, "transparent"),
        "is_self": m.id == self_id,
    }


def _or_dash(value: int | None) -> int | str:
    return "\u2014" if value is None else value


def _legend(changes: Sequence[LeaderChange], colors: dict[str, str]) -> list[tuple[str, str]]:
    """(name, fill) of every leader in the picture, then "unregistered", "no leader"."""
    seen = sorted({c.leader for c in changes}, key=lambda n: (n is None, n == "", n or ""))
    return [(leader_name(node), leader_fill(node, colors)) for node in seen]


def _recent(changes: Sequence[LeaderChange], now: float) -> list[dict[str, Any]]:
    """The last RECENT_ROWS changes, newest first, with how long each lasted."""
    ends = [c.at for c in changes[1:]] + [now]
    rows = [
        {
            "at": clock(change.at, with_date=True),
            "leader": leader_name(change.leader),
            "named": bool(change.leader),
            "term": change.term,
            "lasted": duration(end - change.at),
        }
        for change, end in zip(changes, ends, strict=False)  # no changes: no rows
    ]
    return rows[-RECENT_ROWS:][::-1]


def _store(use: StoreUse | None) -> dict[str, Any] | None:
    if use is None:
        return None
    ratio = use.map_used / use.map_size if use.map_size else 0.0
    level = "bad" if ratio >= WARN_ABOVE else "warn" if ratio >= WARN_ABOVE * 0.75 else "ok"
    return {
        "percent": f"{ratio * 100:.1f}",
        "bar_percent": f"{min(ratio, 1.0) * 100:.2f}",
        "refuse_percent": f"{REFUSE_ABOVE * 100:.1f}",
        "level": level,
        "used": size(use.map_used),
        "map": size(use.map_size),
        "file": size(use.data_file),
        "disk_free": size(use.disk_free),
        "refused": use.writes_refused,
    }


def size(n: float) -> str:
    """Bytes as short text with binary units: 512 B, 3.1 MiB, 1.0 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"
