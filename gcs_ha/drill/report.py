"""The drill report's numbers: `to_json(result)`, the document every output is made from.

    json.dump(to_json(result), f)                # machine-readable (what --json prints)
    print(render.summary_text(result))           # PASS/FAIL first, then plain-text tables
    render.write_html(result, "drill.html")      # header, timeline picture, tables, violations

Decisions (nearest-rank percentiles, "leader lost", byte escaping) are in DESIGN.md
("The report"). Nothing here raises on purpose.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gcs_ha.drill.faults import FAULT_KINDS, Fault
from gcs_ha.drill.linearizability import LinearizabilityResult
from gcs_ha.drill.result import DrillResult, FaultOutage
from gcs_ha.drill.timeline import percentile
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
    """Whether the fault took the serving leader out (DESIGN.md, "The report")."""
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
    if result.split_terms:
        reasons.append(f"{len(result.split_terms)} term(s) with two leaders")
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
    """Every number of the report as JSON types (times: seconds since the start)."""
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
        "leaders_by_term": (
            None if result.leaders is None else {str(t): list(n) for t, n in result.leaders.items()}
        ),
        "split_terms": {str(t): list(n) for t, n in result.split_terms.items()},
        "config": jsonable(result.config),
        "notes": list(result.notes),
    }
