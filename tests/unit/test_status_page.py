"""The status page's rendering (status_page.py, status_timeline.py, templates/status.html):
everything from the cluster is escaped, the timeline is drawn for no, one and many leader
changes, and the page is well-formed and self-contained (no script, nothing loaded)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from gcs_ha.cluster_view import ClusterView, MemberView
from gcs_ha.consensus.api import StoreUse
from gcs_ha.server.leader_history import LeaderChange
from gcs_ha.server.status_page import RECENT_ROWS, StatusPage, render, size
from gcs_ha.server.status_timeline import (
    MIN_WIDTH,
    NO_LEADER,
    PALETTE,
    UNREGISTERED,
    WIDTH,
    duration,
    leader_colors,
    timeline,
)

NOW = 1_800_000_000.0
EVIL = "<script>alert('x')</script>\"&"


def member(node: str, role: str | None, term: int | None = 2, address: str = "h:1") -> MemberView:
    return MemberView(
        id=node,
        role=role,
        term=term if role else None,
        commit_index=10 if role else None,
        applied_index=9 if role else None,
        lag=1 if role else None,
        gcs_address=address,
        raft_address=address.replace("h:", "r:"),
        serving=role == "leader" if role else None,
        reachable=role is not None,
    )


def page(
    members: list[MemberView],
    changes: list[LeaderChange],
    leader: str | None = "a",
    store: StoreUse | None = None,
    **kw: str,
) -> StatusPage:
    return StatusPage(
        node_id=kw.get("node_id", "a"),
        cluster_name=kw.get("cluster_name", "c"),
        view=ClusterView(leader, members),
        changes=changes,
        store=store,
        store_error=kw.get("store_error", "no store yet"),
        ready=True,
        now=NOW,
    )


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def svg_of(html: str) -> ET.Element:
    """The timeline SVG, parsed as XML: it must be well-formed on its own."""
    found = re.search(r'<svg class="timeline".*?</svg>', html, re.S)
    assert found, "no timeline picture"
    return ET.fromstring(found.group(0))


def rects(svg: ET.Element) -> list[ET.Element]:
    return [e for e in svg.iter() if e.tag.endswith("rect") and e.get("class") == "segment"]


def test_everything_from_the_cluster_is_escaped() -> None:
    members = [member(EVIL, "leader", address=f"h:1{EVIL}"), member("b", None)]
    changes = [LeaderChange(NOW - 5, EVIL, 2)]
    html = render(
        page(members, changes, leader=EVIL, node_id=EVIL, cluster_name=EVIL, store_error=EVIL)
    )
    parsed = parse(html)
    assert not [t for t, _ in parsed.tags if t in ("script", "img", "iframe", "link")]
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    # Attribute values survive the round trip exactly: quotes cannot end them early.
    rows = {a["data-node"]: a["data-state"] for t, a in parsed.tags if "data-node" in a}
    assert rows == {EVIL: "leader", "b": "unreachable"}
    text = "".join(parsed.text)
    assert text.count(EVIL) >= 6  # title, cluster, leader, member, address, history, error
    svg_of(html)  # still well-formed XML


def test_members_show_role_reachability_lag_and_addresses() -> None:
    members = [member("a", "leader"), member("b", "follower", address="h:2"), member("c", None)]
    parsed = parse(render(page(members, [LeaderChange(NOW - 9, "a", 2)])))
    rows = {a["data-node"]: a["data-state"] for t, a in parsed.tags if "data-node" in a}
    assert rows == {"a": "leader", "b": "follower", "c": "unreachable"}
    text = " ".join(parsed.text)
    assert "h:2" in text and "r:2" in text
    assert "degraded" in text  # one member does not answer
    assert "(this page)" in text


def test_no_leader_changes_no_picture() -> None:
    assert timeline([], NOW, {}) is None
    html = render(page([member("a", "follower", term=0)], [], leader=None, node_id="a"))
    assert '<svg class="timeline"' not in html
    assert "has seen no leader yet" in html
    assert "No leader" in html and "no leader" in html  # the header and the health word


def test_one_change_fills_the_bar() -> None:
    drawn = timeline([LeaderChange(NOW - 60, "a", 1)], NOW, {"a": "#123456"})
    assert drawn is not None
    [seg] = drawn.segments
    assert (seg.x, seg.width, seg.fill, seg.term) == (0.0, WIDTH, "#123456", 1)
    assert seg.label == "a \u00b7 term 1"
    assert "since" in seg.title and "1 min 0 s" in seg.title
    assert drawn.span_s == 60
    # A change seen this very instant still fills the bar.
    now = timeline([LeaderChange(NOW, "a", 1)], NOW, {})
    assert now is not None and now.segments[0].width == WIDTH
    svg = svg_of(render(page([member("a", "leader")], [LeaderChange(NOW - 60, "a", 1)])))
    assert len(rects(svg)) == 1


def test_many_changes_on_a_linear_scale() -> None:
    changes = [
        LeaderChange(NOW - 100, None, 0),
        LeaderChange(NOW - 99, "a", 1),  # a leads for 49 s
        LeaderChange(NOW - 50, None, 1),
        LeaderChange(NOW - 49.99, "b", 2),  # a 10 ms gap: too thin to see unwidened
        LeaderChange(NOW - 49.98, "b", 3),  # same leader, new term
        LeaderChange(NOW - 25, "c", 4),
    ]
    colors = leader_colors(["c", "a", "b"])
    assert colors == leader_colors(["a", "b", "c", "a"])  # stable, by sorted id
    drawn = timeline(changes, NOW, colors)
    assert drawn is not None
    segs = drawn.segments
    assert [s.term for s in segs] == [0, 1, 1, 2, 3, 4]
    assert [s.fill for s in segs] == [
        NO_LEADER, colors["a"], NO_LEADER, colors["b"], colors["b"], colors["c"],
    ]  # fmt: skip
    assert segs[1].width == pytest.approx(WIDTH * 49 / 100)
    assert segs[1].x == pytest.approx(WIDTH * 1 / 100)
    assert segs[-1].x == pytest.approx(WIDTH * 75 / 100)
    assert segs[-1].x + segs[-1].width == pytest.approx(WIDTH)  # up to now
    assert segs[3].width == MIN_WIDTH  # widened so it shows
    assert [s.x for s in segs] == sorted(s.x for s in segs)
    assert all(s.x >= 0 and s.x + s.width <= WIDTH + 1e-9 for s in segs)
    assert segs[1].label == "a \u00b7 term 1" and segs[3].label == ""
    assert [t.text for t in drawn.ticks][-1] == "now"

    members = [member("a", None), member("b", "follower"), member("c", "leader")]
    html = render(page(members, changes, leader="c", node_id="b"))
    svg = svg_of(html)
    assert len(rects(svg)) == len(changes)
    assert [r.get("fill") for r in rects(svg)] == [s.fill for s in segs]
    titles = [e.text for e in svg.iter() if e.tag.endswith("title")]
    assert titles[0] == segs[0].title and "no leader" in titles[0]
    # The table lists the newest first.
    table = html[html.index('<table id="changes"') :]
    assert table.index("<code>c</code>") < table.index("<code>b</code>")
    assert table.index("<code>b</code>") < table.index("<code>a</code>")


def test_a_leader_seen_before_it_registered_is_unregistered() -> None:
    changes = [LeaderChange(NOW - 60, "", 2), LeaderChange(NOW - 59, "a", 2)]
    colors = leader_colors(["", "a"])
    assert colors == {"a": PALETTE[0]}
    drawn = timeline(changes, NOW, colors)
    assert drawn is not None
    assert [s.fill for s in drawn.segments] == [UNREGISTERED, PALETTE[0]]
    assert "leader unregistered, term 2" in drawn.segments[0].title
    html = render(page([member("a", "leader")], changes))
    legend = html[html.index('<div class="legend">') :]
    legend = legend[: legend.index("</div>")]
    assert "<code>a</code>" in legend and "<code>unregistered</code>" in legend


def test_the_table_lists_the_recent_changes_only() -> None:
    changes = [LeaderChange(NOW - 100 + i, f"n{i}", i) for i in range(RECENT_ROWS + 5)]
    html = render(page([member("a", "leader")], changes))
    table = html[html.index('<table id="changes"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == RECENT_ROWS + 1  # with the header
    assert f"n{RECENT_ROWS + 4}" in table and "n0<" not in table


def test_store_use() -> None:
    use = StoreUse(map_used=900 << 20, map_size=1 << 30, data_file=1 << 30,
                   disk_free=5 << 30, writes_refused=3)  # fmt: skip
    html = render(page([member("a", "leader")], [], store=use))
    assert "87.9 %" in html and "900.0 MiB of 1.0 GiB" in html
    assert 'class="fill bad"' in html  # above the alert's 0.8
    assert "5.0 GiB" in html and "writes refused so far 3" in html
    missing = render(page([member("a", "leader")], [], store=None, store_error="not started"))
    assert "Not measured: not started" in missing


def test_page_is_self_contained() -> None:
    html = render(page([member("a", "leader")], [LeaderChange(NOW - 1, "a", 1)]))
    tags = parse(html).tags
    assert not [t for t, _ in tags if t in ("script", "link", "img")]
    urls = [a.get("href") or a.get("src") for _, a in tags if a.get("href") or a.get("src")]
    assert urls and all(u and u.startswith("/") for u in urls)  # this listener's own paths
    assert "http://" not in html and "https://" not in html


def test_formatting() -> None:
    assert [size(n) for n in (512, 3 << 20, 1536, 5 << 40)] == [
        "512 B", "3.0 MiB", "1.5 KiB", "5.0 TiB",
    ]  # fmt: skip
    assert [duration(s) for s in (0.42, 12.9, 185, 7800, 90000, -1)] == [
        "0.4 s", "12 s", "3 min 5 s", "2 h 10 min", "1 d 1 h", "0.0 s",
    ]  # fmt: skip
