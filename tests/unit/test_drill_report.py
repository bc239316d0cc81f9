"""The drill report: text summary, JSON document and HTML page from hand-built results."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gcs_ha.drill import checks, render, report, timeline
from gcs_ha.drill.faults import Fault
from gcs_ha.drill.linearizability import LinearizabilityResult, Violation
from gcs_ha.drill.result import DrillResult, FaultOutage
from gcs_ha.testing.kvload import Op, Outcome

T0 = 100.0
OK, FAIL, UNKNOWN = Outcome.OK, Outcome.FAIL, Outcome.UNKNOWN
CLEAN = LinearizabilityResult(keys=2, ops=6, violations=(), inconclusive=(), states_explored=42)


def op(
    kind: str,
    start: float,
    latency: float = 0.01,
    outcome: Outcome = OK,
    *,
    key: bytes = b"k1",
    value: bytes | None = b"v",
    result: int | None = 1,
    overwrite: bool = True,
    client: int = 0,
) -> Op:
    return Op(
        client=client,
        kind=kind,  # type: ignore[arg-type]
        key=key,
        value=value,
        start=T0 + start,
        end=T0 + start + latency,
        outcome=outcome,
        result=result,
        overwrite=overwrite,
        error="" if outcome is OK else "deadline exceeded",
    )


HISTORY = (
    op("put", 0.5, 0.010),
    op("put", 1.0, 0.020, overwrite=False, result=0),
    op("get", 1.5, 0.030, value=b"v"),
    op("get", 2.0, 0.040, FAIL),
    op("del", 2.5, 0.050),
    op("put", 3.0, 2.000, UNKNOWN),
    op("get", 5.5, 0.060, key=b"k2", value=None, result=None),
)
KILL = Fault("kill-leader", (0,), T0 + 2.0, T0 + 3.0, leader=0, detail="killed r0")
PAUSE = Fault("pause", (2,), T0 + 4.0, T0 + 6.0, leader=1)
POWER = Fault("powerloss", (1,), T0 + 7.0, T0 + 8.0, leader=1)


def drill(**changes: object) -> DrillResult:
    base = DrillResult(
        config={"replicas": 3, "seed": 7, "mix": ("kill-leader", "pause"), "ns": b"\x01\\"},
        started=T0,
        ended=T0 + 10.0,
        history=HISTORY,
        faults=(KILL, PAUSE, POWER),
        linearizability=CLEAN,
        lost_writes=(),
        digests={"r0": "aaa", "r1": "aaa", "r2": "aaa"},
        outages=(FaultOutage(KILL, 1.5), FaultOutage(PAUSE, 0.5), FaultOutage(POWER, None)),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def violation() -> Violation:
    ops = (
        op("put", 1.0, key=b"k\x00", value=b"new", client=1),
        op("get", 2.0, key=b"k\x00", value=b"old", client=2),
    )
    return Violation(b"k\x00", ops, "read old after new was acknowledged")


def table_row(text: str, first: str) -> list[str]:
    """The cells of the first table line whose first cell is `first`."""
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


# -- the small pure functions ----------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert timeline.percentile(values, 50) == 50.0
    assert timeline.percentile(values, 99) == 99.0
    assert timeline.percentile(values, 100) == 100.0
    assert timeline.percentile([3.0], 99) == 3.0
    assert timeline.percentile([], 50) is None


def test_bucket_width_keeps_100ms_until_the_bucket_count_would_be_too_large() -> None:
    assert timeline.bucket_width(30.0) == 0.1
    assert timeline.bucket_width(60.0) == 0.1
    wide = timeline.bucket_width(3600.0)
    assert wide == 10.0
    assert 3600.0 / wide <= timeline.MAX_BUCKETS
    assert timeline.nice_step(7.0, 10) == 1.0
    assert timeline.nice_step(0.33, 3) == 0.2


def test_bucketize_counts_by_completion_and_clamps_strays() -> None:
    ops = [
        op("put", 0.00, 0.05),  # ends at 0.05: bucket 0
        op("get", 0.05, 0.04),  # ends at 0.09: bucket 0
        op("get", 0.10, 0.01, FAIL),  # bucket 1
        op("put", 0.12, 0.07, UNKNOWN),  # ends at 0.19: bucket 1
        op("del", 5.00, 0.01),  # past the end: the last bucket
    ]
    buckets = timeline.bucketize(ops, T0, 0.1, 3)
    assert [(b.ok, b.failed, b.unknown) for b in buckets] == [(2, 0, 0), (0, 1, 1), (1, 0, 0)]
    assert buckets[0].p50 == pytest.approx(0.04)
    assert buckets[0].p99 == pytest.approx(0.05)
    assert buckets[1].p50 is None
    assert buckets[1].worst_bad == pytest.approx(0.07)


def test_pack_rows_puts_overlapping_intervals_on_different_rows() -> None:
    assert timeline.pack_rows([(0, 5), (1, 3), (5, 6), (2, 8)]) == [0, 1, 0, 2]
    assert timeline.pack_rows([]) == []


def test_scale_maps_linearly_or_by_log_and_clamps() -> None:
    linear = timeline.Scale(0.0, 10.0, 100.0, 200.0)
    assert linear(5.0) == 150.0
    assert linear(-3.0) == 100.0
    assert linear(99.0) == 200.0
    log = timeline.Scale(0.001, 10.0, 300.0, 0.0, log=True)
    assert log(0.01) == pytest.approx(225.0)
    assert log(1.0) == pytest.approx(75.0)


def test_outage_window_starts_at_the_last_ack_before_the_fault() -> None:
    acks = [T0 + 1.0, T0 + 1.9, T0 + 3.5]
    assert timeline.outage_window(FaultOutage(KILL, 1.5), acks) == (T0 + 1.9, T0 + 3.4)
    assert timeline.outage_window(FaultOutage(KILL, 1.0), []) == (T0 + 2.0, T0 + 3.0)
    assert timeline.outage_window(FaultOutage(KILL, None), acks) is None


def test_bytes_text_escapes_backslash_and_unprintable_bytes() -> None:
    assert report.bytes_text(b"ab\\\x00\xff~") == "ab\\x5c\\x00\\xff~"


def test_op_class_and_leader_lost() -> None:
    assert report.op_class(op("put", 0)) == "put"
    assert report.op_class(op("put", 0, overwrite=False)) == "cas-put"
    assert report.op_class(op("del", 0)) == "del"
    assert report.leader_lost(KILL)
    assert report.leader_lost(Fault("partition-leader", (1,), 0, 1))
    assert report.leader_lost(Fault("powerloss", (1,), 0, 1, leader=1))
    assert not report.leader_lost(Fault("powerloss", (2,), 0, 1, leader=1))
    assert not report.leader_lost(Fault("pause", (2,), 0, 1))  # leader unknown


# -- the text summary ------------------------------------------------------------------------


def test_summary_text_of_a_passing_drill() -> None:
    text = render.summary_text(drill())
    assert text.splitlines()[0].startswith("PASS")
    assert table_row(text, "all")[1:5] == ["7", "5", "1", "1"]
    assert table_row(text, "get")[1:5] == ["3", "2", "1", "0"]
    assert table_row(text, "put")[1:5] == ["2", "1", "0", "1"]
    assert table_row(text, "cas-put")[1:5] == ["1", "1", "0", "0"]
    assert table_row(text, "del")[1:5] == ["1", "1", "0", "0"]
    # kill-leader: 1 fault, 0 errors, 1 measured, 0 unbounded, 1.50 s
    assert table_row(text, "kill-leader")[1:6] == ["1", "0", "1", "0", "1.50"]
    assert table_row(text, "powerloss")[1:6] == ["1", "0", "0", "1", "-"]
    assert "violations:" not in text
    assert table_row(text, "terms")[-3:] == ["(no", "replica", "logs)"]
    text = render.summary_text(drill(leaders={2: ("r0",), 3: ("r1",)}))
    assert table_row(text, "terms") == ["terms", "with", "two", "leaders", "0", "of", "2"]


def test_leaders_by_term_reads_every_replica_log(tmp_path: Path) -> None:
    line = "2026-12-07 10:00:00 INFO {} gcs_ha.consensus.leadership: serving as leader of term {}"
    (tmp_path / "r0.log").write_text(line.format("r0", 2) + "\n" + line.format("r0", 5) + "\n")
    (tmp_path / "r1.log").write_text("noise\n" + line.format("r1", 3) + "\n")
    (tmp_path / "r2.log").write_text(line.format("r2", 5) + "\n")
    logs = {f"r{i}": tmp_path / f"r{i}.log" for i in range(4)}  # r3 never logged
    leaders = checks.leaders_by_term(logs)
    assert leaders == {2: ("r0",), 3: ("r1",), 5: ("r0", "r2")}
    assert drill(leaders=leaders).split_terms == {5: ("r0", "r2")}


def test_summary_text_of_a_failing_drill_explains_the_violation() -> None:
    lin = replace(CLEAN, violations=(violation(),))
    text = render.summary_text(drill(linearizability=lin, lost_writes=(b"w9",)))
    first = text.splitlines()[0]
    assert first.startswith("FAIL")
    assert "1 linearizability violation" in first
    assert "1 acknowledged write(s) lost" in first
    assert "key k\\x00: read old after new was acknowledged" in text
    assert "+1.000s..+1.010s" in text
    assert "get k\\x00 -> old" in text
    assert table_row(text, "violations")[1] == "1"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"lost_writes": (b"a", b"b")}, "2 acknowledged write(s) lost"),
        ({"digests": {"r0": "a", "r1": "b"}}, "replicas diverge"),
        ({"digests": {}}, "no replica digests"),
        ({"faults": (replace(KILL, error="restart failed"),)}, "1 fault(s) not carried out"),
        ({"linearizability": replace(CLEAN, inconclusive=(b"k",))}, "1 key(s) inconclusive"),
        ({"leaders": {3: ("r0",), 4: ("r1", "r2")}}, "1 term(s) with two leaders"),
    ],
)
def test_each_failed_check_fails_the_drill_with_its_reason(
    changes: dict[str, object], reason: str
) -> None:
    result = drill(**changes)
    assert not result.passed
    assert any(reason in r for r in report.failure_reasons(result))
    assert render.summary_text(result).startswith("FAIL")
    assert report.failure_reasons(drill()) == []


# -- the JSON document -----------------------------------------------------------------------


def test_to_json_round_trips_and_holds_the_numbers() -> None:
    lin = replace(CLEAN, violations=(violation(),))
    doc = report.to_json(drill(linearizability=lin, lost_writes=(b"w\xff",)))
    assert json.loads(json.dumps(doc)) == doc
    assert {"passed", "ops", "faults", "outages", "linearizability", "lost_writes"} <= set(doc)
    assert {"digests", "divergent", "config"} <= set(doc)
    assert doc["passed"] is False
    ops = doc["ops"]
    assert (ops["total"], ops["ok"], ops["failed"], ops["unknown"]) == (7, 5, 1, 1)
    assert ops["by_kind"]["cas-put"]["total"] == 1
    assert ops["by_kind"]["get"]["latency_ms"] == {"p50": 30.0, "p99": 60.0, "max": 60.0}
    assert ops["throughput"]["ok_per_s"] == 0.5
    assert doc["faults"]["by_kind"]["pause"] == {"count": 1, "errors": 0}
    assert doc["faults"]["leader_lost"] == {"count": 2, "errors": 0}
    kill = doc["outages"]["by_kind"]["kill-leader"]
    assert (kill["p50_s"], kill["p99_s"], kill["max_s"]) == (1.5, 1.5, 1.5)
    leader = doc["outages"]["leader_lost"]
    assert (leader["faults"], leader["measured"], leader["unbounded"]) == (2, 1, 1)
    first = doc["outages"]["faults"][0]
    assert (first["kind"], first["start_s"], first["outage_s"], first["targets"]) == (
        "kill-leader",
        2.0,
        1.5,
        [0],
    )
    assert doc["linearizability"]["violation_count"] == 1
    assert doc["linearizability"]["violations"][0]["ops"][1]["value"] == "old"
    assert doc["lost_writes"] == {"count": 1, "keys": ["w\\xff"]}
    assert doc["config"] == {
        "replicas": 3,
        "seed": 7,
        "mix": ["kill-leader", "pause"],
        "ns": "\\x01\\x5c",
    }
    assert doc["divergent"] is False


def test_to_json_does_not_dump_the_history() -> None:
    history = big_history(20_000)
    many = tuple(Violation(b"k", history[:100], "no order") for _ in range(50))
    doc = report.to_json(drill(history=history, linearizability=replace(CLEAN, violations=many)))
    assert doc["ops"]["total"] == 20_000
    assert doc["linearizability"]["violation_count"] == 50
    assert len(doc["linearizability"]["violations"]) == report.JSON_VIOLATIONS
    assert len(doc["linearizability"]["violations"][0]["ops"]) == report.OPS_PER_VIOLATION
    assert len(json.dumps(doc)) < 100_000


# -- the HTML page ---------------------------------------------------------------------------


class TagBalance(HTMLParser):
    """Checks that every non-void tag is closed in order."""

    VOID = frozenset({"meta", "br", "img", "hr", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: object) -> None:
        pass  # <rect .../>: opened and closed at once

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def check_page(path: Path) -> tuple[str, ET.Element]:
    text = path.read_text(encoding="utf-8")
    balance = TagBalance()
    balance.feed(text)
    balance.close()
    assert balance.errors == [] and balance.stack == []
    for external in ("http://", "https://", "<script", "src=", "href=", "url(", "@import"):
        assert external not in text
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    return text, ET.fromstring(svg)


def test_write_html_draws_faults_outages_and_failed_ops(tmp_path: Path) -> None:
    lin = replace(CLEAN, violations=(violation(),))
    path = tmp_path / "report.html"
    render.write_html(drill(linearizability=lin), path)
    text, svg = check_page(path)
    assert "<title>gcs-ha drill: FAIL</title>" in text
    labels = {t.text for t in svg.iter("text")}
    assert {"kill-leader r0", "pause r2", "powerloss r1"} <= labels
    tips = [t.text or "" for t in svg.iter("title")]
    assert "kill-leader r0: +2.00s for 1.00s (leader r0); killed r0" in tips
    assert any(t.startswith("outage 1.500 s around kill-leader r0") for t in tips)
    assert any(t.startswith("outage 0.500 s around pause r2") for t in tips)
    assert not any("around powerloss" in t for t in tips)  # unbounded: nothing to draw
    assert any(t.startswith("UNKNOWN put") for t in tips)
    assert any(t.startswith("FAIL get") for t in tips)
    assert "read old after new was acknowledged" in text
    assert "<h2>Violations</h2>" in text


def test_write_html_of_a_passing_drill(tmp_path: Path) -> None:
    path = tmp_path / "ok.html"
    render.write_html(drill(), path)
    text, _ = check_page(path)
    assert '<header class="pass"><h1>gcs-ha drill: PASS</h1>' in text
    assert "<h2>Violations</h2>" not in text


def big_history(n: int, duration: float = 120.0) -> tuple[Op, ...]:
    rnd = random.Random(5)
    kinds = ("get", "put", "del")
    outcomes = (OK,) * 97 + (FAIL, UNKNOWN, UNKNOWN)
    return tuple(
        op(kinds[i % 3], rnd.uniform(0, duration), rnd.uniform(0.001, 0.05), rnd.choice(outcomes))
        for i in range(n)
    )


def test_a_50k_op_history_gives_a_bounded_file(tmp_path: Path) -> None:
    faults = tuple(
        Fault("kill-leader", (i % 3,), T0 + 10 * i, T0 + 10 * i + 2, leader=i % 3)
        for i in range(12)
    )
    result = drill(
        history=big_history(50_000),
        faults=faults,
        outages=tuple(FaultOutage(f, 1.0) for f in faults),
        ended=T0 + 120.0,
    )
    path = tmp_path / "big.html"
    render.write_html(result, path)
    _, svg = check_page(path)
    assert path.stat().st_size < 250_000
    # aggregated: no more markers than buckets, not one per operation
    assert len(list(svg.iter("circle"))) <= timeline.MAX_BUCKETS
    assert any((p.findtext("title") or "").startswith("p99 latency") for p in svg.iter("path"))


def test_an_empty_drill_still_renders(tmp_path: Path) -> None:
    # A drill that produced nothing (e.g. the cluster never came up) must still report.
    result = drill(history=(), faults=(), outages=(), config={}, digests={}, ended=T0)
    text = render.summary_text(result)
    assert text.startswith("FAIL: no replica digests")
    assert table_row(text, "all")[1:5] == ["0", "0", "0", "0"]
    render.write_html(result, tmp_path / "empty.html")
    check_page(tmp_path / "empty.html")
