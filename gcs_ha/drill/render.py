"""The drill report as text and HTML, formatted from report.to_json's document.

    print(summary_text(result))                  # PASS/FAIL first, then plain-text tables
    write_html(result, "drill.html")             # header, timeline picture, tables, violations

write_html raises OSError if the file cannot be written; nothing else raises on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from textwrap import indent
from typing import Any

from gcs_ha.drill.report import (
    JSON_VIOLATIONS,
    LEADER_LOST,
    TEXT_VIOLATIONS,
    outage_stats,
    to_json,
)
from gcs_ha.drill.result import DrillResult
from gcs_ha.drill.timeline import timeline_svg
from gcs_ha.table import render_table

# -- formatting (from the JSON document) ---------------------------------------------------


@dataclass(frozen=True)
class Table:
    title: str
    header: tuple[str, ...]  # empty: a key/value table without a header line
    rows: Sequence[tuple[str, ...]]


def fmt(v: Any, digits: int = 1) -> str:
    """A cell: "-" for None, floats with `digits` decimals, the rest as str."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def cell(v: Any) -> str:
    """A JSON value as one table cell: lists comma-separated, objects as JSON."""
    if isinstance(v, list):
        return ", ".join(map(cell, v))
    return json.dumps(v) if isinstance(v, dict) else fmt(v, 3)


def verdict_line(doc: Mapping[str, Any]) -> str:
    head = "PASS" if doc["passed"] else "FAIL: " + "; ".join(doc["failures"])
    ops = doc["ops"]
    return (
        f"{head}  ({fmt(doc['duration_s'])} s, {ops['total']} ops, "
        f"{ops['throughput']['ok_per_s']:.0f} ok/s, {doc['faults']['count']} faults)"
    )


def _ops_table(ops: Mapping[str, Any]) -> Table:
    header = ("kind", "total", "ok", "failed", "unknown", "p50 ms", "p99 ms", "max ms")
    rows = []
    for name, c in [*ops["by_kind"].items(), ("all", ops)]:
        lat = c["latency_ms"]
        counts = (c["total"], c["ok"], c["failed"], c["unknown"])
        rows.append((name, *map(str, counts), *(fmt(lat[k]) for k in ("p50", "p99", "max"))))
    return Table("operations (latency of OK ops)", header, rows)


def _faults_table(doc: Mapping[str, Any]) -> Table:
    header = ("fault", "count", "errors", "measured", "unbounded", "p50 s", "p99 s", "max s")
    by_kind, outages = doc["faults"]["by_kind"], doc["outages"]
    rows = []
    for name in [*by_kind, LEADER_LOST]:
        if name == LEADER_LOST:
            f, o = doc["faults"]["leader_lost"], outages["leader_lost"]
        else:
            f, o = by_kind[name], outages["by_kind"].get(name) or outage_stats([])
        counts = (f["count"], f["errors"], o["measured"], o["unbounded"])
        stats = (fmt(o[k], 2) for k in ("p50_s", "p99_s", "max_s"))
        rows.append((name, *map(str, counts), *stats))
    return Table("faults and client-visible outages", header, rows)


def _split_terms(doc: Mapping[str, Any]) -> str:
    if doc["leaders_by_term"] is None:
        return "not checked (no replica logs)"
    split = doc["split_terms"]
    if not split:
        return f"0 of {len(doc['leaders_by_term'])}"
    return "; ".join(f"term {t}: {', '.join(n)}" for t, n in split.items())


def _checks_table(doc: Mapping[str, Any]) -> Table:
    lin, lost = doc["linearizability"], doc["lost_writes"]
    rows = [
        ("linearizable", "yes" if lin["ok"] else "NO"),
        ("keys / ops checked", f"{lin['keys']} / {lin['ops']}"),
        ("violations", str(lin["violation_count"])),
        ("inconclusive keys", str(len(lin["inconclusive"]))),
        ("states explored", str(lin["states_explored"])),
        ("lost acknowledged writes", str(lost["count"])),
        ("replicas divergent", "YES" if doc["divergent"] else "no"),
        ("terms with two leaders", _split_terms(doc)),
    ]
    rows += [(f"digest {name}", digest) for name, digest in sorted(doc["digests"].items())]
    if lost["keys"]:
        rows.append(("lost keys (first)", " ".join(lost["keys"][:10])))
    return Table("checks", (), rows)


def tables(doc: Mapping[str, Any]) -> list[Table]:
    """The summary tables, formatted from a to_json document."""
    throughput = doc["ops"]["throughput"]
    run = [
        ("duration", f"{fmt(doc['duration_s'], 2)} s"),
        (
            "throughput",
            f"{fmt(throughput['ok_per_s'])} ok ops/s ({fmt(throughput['all_per_s'])} all)",
        ),
    ]
    config = [(str(k), cell(v)) for k, v in doc["config"].items()]
    return [
        Table("run", (), run),
        _ops_table(doc["ops"]),
        _faults_table(doc),
        _checks_table(doc),
        Table("config", (), config),
    ]


def format_table(table: Table) -> str:
    """The title, then the table indented (gcs_ha.table): with a header, a rule under it and
    the columns after the first (numbers) right-aligned; without, every column left-aligned."""
    if not table.header and not table.rows:
        return f"{table.title}: (none)"
    left = 1 if table.header else None
    text = render_table(table.rows, header=table.header, left=left, rule=True)
    return f"{table.title}:\n" + indent(text, "  ")


def describe_op(op: Mapping[str, Any]) -> str:
    """One line for an operation of a violation (an _op_json dict)."""
    ok, kind, key = op["outcome"] == "OK", op["kind"], op["key"]
    if kind in ("put", "cas-put"):
        what = f"{kind} {key}={op['value']}" + (f" -> added={op['result']}" if ok else "")
    elif kind == "get":
        read = "not found" if op["value"] is None else op["value"]
        what = f"get {key}" + (f" -> {read}" if ok else "")
    else:
        what = f"del {key}" + (f" -> deleted={op['result']}" if ok else "")
    error = f"  ({op['error'][:80]})" if op["error"] and not ok else ""
    span = f"+{op['start_s']:.3f}s..+{op['end_s']:.3f}s"
    return f"c{op['client']:<3} {span:<22} {op['outcome']:<7} {what}{error}"


def describe_violations(lin: Mapping[str, Any], limit: int) -> list[str]:
    lines = []
    for v in lin["violations"][:limit]:
        lines.append(f"key {v['key']}: {v['reason']}")
        lines += ["    " + describe_op(op) for op in v["ops"]]
        if v["op_count"] > len(v["ops"]):
            lines.append(f"    ... {v['op_count'] - len(v['ops'])} more operations")
    if lin["violation_count"] > limit:
        lines.append(f"... {lin['violation_count'] - limit} more violations")
    return lines


def summary_text(result: DrillResult) -> str:
    """The terminal summary: the verdict line, the tables, the first violations, notes."""
    doc = to_json(result)
    parts = [verdict_line(doc), *map(format_table, tables(doc))]
    if doc["linearizability"]["violations"]:
        violations = describe_violations(doc["linearizability"], TEXT_VIOLATIONS)
        parts.append("violations:\n" + "\n".join("  " + line for line in violations))
    if doc["notes"]:
        parts.append("notes:\n" + "\n".join(f"  {n}" for n in doc["notes"]))
    return "\n\n".join(parts) + "\n"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return (
        f"<table><caption>{escape(table.title)}</caption>"
        + (f"<thead><tr>{head}</tr></thead>" if head else "")
        + f"<tbody>{body}</tbody></table>"
    )


CSS = (
    "body{font-family:sans-serif;margin:16px;color:#222}"
    "header{padding:8px 14px;border-radius:6px;margin-bottom:12px}"
    ".pass{background:#dff3df}.fail{background:#f8d7d7}h1{margin:4px 0}"
    "table{border-collapse:collapse;margin:10px 16px 10px 0;display:inline-table}"
    "caption{text-align:left;font-weight:bold;padding:4px 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "pre{background:#f6f6f6;padding:6px;overflow-x:auto}"
)


def _header(doc: Mapping[str, Any]) -> str:
    ops, leader = doc["ops"], doc["outages"]["leader_lost"]
    numbers = [
        ("duration", f"{fmt(doc['duration_s'])} s"),
        ("ops", f"{ops['total']} ({ops['failed']} failed, {ops['unknown']} unknown)"),
        ("OK ops/s", fmt(ops["throughput"]["ok_per_s"])),
        ("p99 latency", f"{fmt(ops['latency_ms']['p99'])} ms"),
        ("faults", str(doc["faults"]["count"])),
        ("leader-loss outage p50/max", f"{fmt(leader['p50_s'], 2)} / {fmt(leader['max_s'], 2)} s"),
        ("violations", str(doc["linearizability"]["violation_count"])),
        ("lost writes", str(doc["lost_writes"]["count"])),
        ("divergent", "YES" if doc["divergent"] else "no"),
    ]
    verdict = "PASS" if doc["passed"] else "FAIL"
    reasons = "".join(f"<li>{escape(r)}</li>" for r in doc["failures"])
    items = " &#183; ".join(f"{escape(k)}: <b>{escape(v)}</b>" for k, v in numbers)
    return (
        f'<header class="{verdict.lower()}"><h1>gcs-ha drill: {verdict}</h1>'
        + (f"<ul>{reasons}</ul>" if reasons else "")
        + f"<p>{items}</p></header>"
    )


def render_html(result: DrillResult) -> str:
    """The whole page as one string (no external references, no script)."""
    doc = to_json(result)
    body = [_header(doc), "<h2>Timeline</h2>", timeline_svg(result), "<h2>Summary</h2>"]
    body += [_html_table(t) for t in tables(doc)]
    lin = doc["linearizability"]
    if lin["violations"]:
        text = "\n".join(describe_violations(lin, JSON_VIOLATIONS))
        body.append(f"<h2>Violations</h2><pre>{escape(text)}</pre>")
    if doc["notes"]:
        notes = "".join(f"<li>{escape(n)}</li>" for n in doc["notes"])
        body.append(f"<h2>Notes</h2><ul>{notes}</ul>")
    title = f"gcs-ha drill: {'PASS' if doc['passed'] else 'FAIL'}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        f"<title>{title}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html(result: DrillResult, path: str | Path) -> None:
    """Write the report page to `path` (UTF-8). OSError if it cannot be written."""
    Path(path).write_text(render_html(result), encoding="utf-8")
