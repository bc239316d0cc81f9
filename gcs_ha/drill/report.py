"""The drill report: a terminal summary, a JSON document and a self-contained HTML page.

    print(summary_text(result))                  # PASS/FAIL first, then plain-text tables
    json.dump(to_json(result), f)                # the same numbers, machine-readable
    write_html(result, "drill.html")             # header, timeline picture, tables, violations

`to_json` computes every number once; the text and HTML tables are formatted from its
document, so the three outputs cannot disagree. Latencies are of OK operations, end - start;
percentiles are nearest-rank (an observed value). Times in the output are seconds since the
drill started. Bytes (keys, values) become text: printable ASCII as is, any other byte and
the backslash as \\xNN, so the text is unambiguous. The history itself is not dumped: only
counts, and the operations that take part in the first violations.

"Leader lost" aggregates the faults that took the serving leader out: kill-leader and
partition-leader always, any other kind (powerloss, pause, kill-random, churn) when its
targets include the leader recorded at its start.

write_html raises OSError if the file cannot be written; nothing else raises on purpose.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from gcs_ha.drill.faults import FAULT_KINDS, Fault
from gcs_ha.drill.linearizability import LinearizabilityResult
from gcs_ha.drill.result import DrillResult, FaultOutage
from gcs_ha.drill.timeline import percentile, timeline_svg
from gcs_ha.testing.kvload import Op, Outcome

OP_CLASSES = ("get", "put", "cas-put", "del")
LEADER_KINDS = frozenset({"kill-leader", "partition-leader"})
LEADER_LOST = "leader lost"
TEXT_VIOLATIONS = 3  # violations explained in the terminal summary
JSON_VIOLATIONS = 20  # ... in the JSON document and the HTML page
OPS_PER_VIOLATION = 20
LOST_KEYS = 100


def bytes_text(data: bytes) -> str:
    """Printable ASCII as is; every other byte, and the backslash, as \\xNN."""
    return "".join(chr(c) if 32 <= c < 127 and c != 92 else f"\\x{c:02x}" for c in data)


def op_class(op: Op) -> str:
    """get, put, cas-put (a put with overwrite=False) or del."""
    return "cas-put" if op.kind == "put" and not op.overwrite else op.kind


def leader_lost(fault: Fault) -> bool:
    """Whether the fault took the serving leader out (see the module doc)."""
    return fault.kind in LEADER_KINDS or (fault.leader >= 0 and fault.leader in fault.targets)


def failure_reasons(result: DrillResult) -> list[str]:
    """Why the drill failed, one phrase per check (empty exactly when result.passed)."""
    lin, reasons = result.linearizability, []
    if lin.violations:
        reasons.append(f"{len(lin.violations)} linearizability violation(s)")
    if lin.inconclusive:
        reasons.append(f"{len(lin.inconclusive)} key(s) inconclusive (search budget)")
    if result.lost_writes:
        reasons.append(f"{len(result.lost_writes)} acknowledged write(s) lost")
    if result.phantom_writes:
        reasons.append(f"{len(result.phantom_writes)} phantom write(s)")
    if result.divergent:
        reasons.append(f"replicas diverge ({len(set(result.digests.values()))} digests)")
    if not result.digests:
        reasons.append("no replica digests")
    errors = sum(bool(f.error) for f in result.faults)
    if errors:
        reasons.append(f"{errors} fault(s) not carried out")
    return reasons


def jsonable(value: Any) -> Any:
    """`value` as JSON types: bytes as text, tuples and sets as lists, enums by value,
    dataclasses as dicts, non-finite floats and anything else as str."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return bytes_text(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None else round(v, digits)


def latency_ms(ops: Iterable[Op]) -> dict[str, float | None]:
    """p50, p99 and max latency in milliseconds of the OK operations among `ops`."""
    ms = [(op.end - op.start) * 1000 for op in ops if op.outcome is Outcome.OK]
    return {k: _r(percentile(ms, p), 3) for k, p in (("p50", 50), ("p99", 99), ("max", 100))}


def op_counts(ops: Sequence[Op]) -> dict[str, Any]:
    return {
        "total": len(ops),
        "ok": sum(op.outcome is Outcome.OK for op in ops),
        "failed": sum(op.outcome is Outcome.FAIL for op in ops),
        "unknown": sum(op.outcome is Outcome.UNKNOWN for op in ops),
        "latency_ms": latency_ms(ops),
    }


def fault_counts(faults: Iterable[Fault]) -> dict[str, int]:
    """How many faults, and how many of them the nemesis could not carry out."""
    records = list(faults)
    return {"count": len(records), "errors": sum(bool(f.error) for f in records)}


def outage_stats(outages: Iterable[FaultOutage]) -> dict[str, Any]:
    """Count, measured/unbounded split and p50/p99/max (s) of some faults' outages."""
    records = list(outages)
    measured = [o.outage_s for o in records if o.outage_s is not None]
    stats: dict[str, Any] = {"faults": len(records), "measured": len(measured)}
    stats["unbounded"] = len(records) - len(measured)
    for key, p in (("p50_s", 50), ("p99_s", 99), ("max_s", 100)):
        stats[key] = _r(percentile(measured, p))
    return stats


def _kinds(kinds: Iterable[str]) -> list[str]:
    present = set(kinds)
    return [k for k in FAULT_KINDS if k in present] + sorted(present - set(FAULT_KINDS))


def _ops_json(result: DrillResult) -> dict[str, Any]:
    history, duration = result.history, max(result.ended - result.started, 1e-9)
    doc = op_counts(history)
    doc["by_kind"] = {c: op_counts([op for op in history if op_class(op) == c]) for c in OP_CLASSES}
    doc["throughput"] = {"ok_per_s": _r(doc["ok"] / duration, 3)}
    doc["throughput"]["all_per_s"] = _r(len(history) / duration, 3)
    return doc


def _fault_json(fault: Fault, outage_s: float | None, t0: float) -> dict[str, Any]:
    return {
        "kind": fault.kind,
        "targets": list(fault.targets),
        "leader": fault.leader,
        "start_s": _r(fault.start - t0),
        "end_s": _r(fault.end - t0),
        "duration_s": _r(fault.duration),
        "leader_lost": leader_lost(fault),
        "outage_s": _r(outage_s),
        "detail": fault.detail,
        "error": fault.error,
    }


def _outages_json(result: DrillResult) -> dict[str, Any]:
    outages = result.outages
    by_fault = {o.fault: o.outage_s for o in outages}
    return {
        "by_kind": {
            k: outage_stats(o for o in outages if o.fault.kind == k)
            for k in _kinds(o.fault.kind for o in outages)
        },
        "leader_lost": outage_stats(o for o in outages if leader_lost(o.fault)),
        "faults": [_fault_json(f, by_fault.get(f), result.started) for f in result.faults],
    }


def _op_json(op: Op, t0: float) -> dict[str, Any]:
    return {
        "client": op.client,
        "kind": op_class(op),
        "key": bytes_text(op.key),
        "value": None if op.value is None else bytes_text(op.value),
        "start_s": _r(op.start - t0),
        "end_s": _r(op.end - t0),
        "outcome": op.outcome.name,
        "result": op.result,
        "error": op.error,
        "address": op.address,
    }


def _linearizability_json(lin: LinearizabilityResult, t0: float) -> dict[str, Any]:
    return {
        "ok": lin.ok,
        "keys": lin.keys,
        "ops": lin.ops,
        "states_explored": lin.states_explored,
        "violation_count": len(lin.violations),
        "inconclusive": [bytes_text(k) for k in lin.inconclusive],
        "violations": [
            {
                "key": bytes_text(v.key),
                "reason": v.reason,
                "op_count": len(v.ops),
                "ops": [_op_json(op, t0) for op in v.ops[:OPS_PER_VIOLATION]],
            }
            for v in lin.violations[:JSON_VIOLATIONS]
        ],
    }


def to_json(result: DrillResult) -> dict[str, Any]:
    """Every number of the report as JSON types (see the module doc for units)."""
    return {
        "passed": result.passed,
        "failures": failure_reasons(result),
        "duration_s": _r(result.ended - result.started),
        "ops": _ops_json(result),
        "faults": {
            **fault_counts(result.faults),
            "by_kind": {
                k: fault_counts(f for f in result.faults if f.kind == k)
                for k in _kinds(f.kind for f in result.faults)
            },
            "leader_lost": fault_counts(f for f in result.faults if leader_lost(f)),
        },
        "outages": _outages_json(result),
        "linearizability": _linearizability_json(result.linearizability, result.started),
        "lost_writes": {
            "count": len(result.lost_writes),
            "keys": [bytes_text(k) for k in result.lost_writes[:LOST_KEYS]],
        },
        "phantom_writes": {
            "count": len(result.phantom_writes),
            "keys": [bytes_text(k) for k in result.phantom_writes[:LOST_KEYS]],
        },
        "digests": dict(result.digests),
        "divergent": result.divergent,
        "config": jsonable(result.config),
        "notes": list(result.notes),
    }


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
    """Plain-text columns: numbers (columns after the first of a table with a header)
    right-aligned, the rest left-aligned."""
    lines = [table.header, *table.rows] if table.header else list(table.rows)
    if not lines:
        return f"{table.title}: (none)"
    widths = [
        max(len(row[i]) for row in lines if i < len(row)) for i in range(max(map(len, lines)))
    ]
    out = [f"{table.title}:"]
    for n, row in enumerate(lines):
        cells = [
            c.rjust(widths[i]) if i and table.header else c.ljust(widths[i])
            for i, c in enumerate(row)
        ]
        out.append("  " + "  ".join(cells).rstrip())
        if n == 0 and table.header:
            out.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(out)


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
