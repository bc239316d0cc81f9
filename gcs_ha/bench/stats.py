"""Benchmark results: one record per measured point, percentiles, and the storage table.

A `Point` is what `gcs-ha bench storage --json` prints for each system x writers
combination; `extra` carries per-system details (group-commit counters, batch size).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gcs_ha import table
from gcs_ha.bench.cpu import ROLE_TITLES, role_cells


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest-rank; 0.0 if empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Point:
    """One measured point: `system` at `writers` concurrent writers."""

    system: str
    replicas: int
    writers: int
    writes: int
    seconds: float
    p50_ms: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "replicas": self.replicas,
            "writers": self.writers,
            "writes_per_s": round(self.writes_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "writes": self.writes,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def point_from_latencies(
    system: str,
    *,
    replicas: int,
    writers: int,
    latencies_s: list[float],
    seconds: float,
    writes: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Point:
    """A Point from per-write latencies (seconds); `writes` defaults to their count."""
    ordered = sorted(latencies_s)
    return Point(
        system=system,
        replicas=replicas,
        writers=writers,
        writes=len(ordered) if writes is None else writes,
        seconds=seconds,
        p50_ms=percentile(ordered, 50) * 1000.0,
        p99_ms=percentile(ordered, 99) * 1000.0,
        extra=dict(extra or {}),
    )


IDENTITY_FIELDS = frozenset({"system", "replicas", "writers", "batch", "value_bytes", "seconds"})


def median_points(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (system, writers): the median of every measured number over several runs'
    JSON records (fields naming the point are kept as they are); adds `runs`."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run:
            groups.setdefault((row["system"], row["writers"]), []).append(row)
    out = []
    for rows in groups.values():
        merged = dict(rows[0])
        for key, value in rows[0].items():
            if key in IDENTITY_FIELDS or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
                merged[key] = round(statistics.median(values), 3)
        merged["runs"] = len(rows)
        out.append(merged)
    return out


def render_table(rows: Iterable[dict[str, Any]]) -> str:
    """The human-readable table of `gcs-ha bench storage`. The last columns: CPU ms per
    write of the leader's front end (the writers run there), its consensus process and
    one follower."""
    header = ("SYSTEM", "REPLICAS", "WRITERS", "WRITES/S", "P50 MS", "P99 MS", "REQ/ENTRY",
              *ROLE_TITLES)  # fmt: skip
    lines: list[tuple[str, ...]] = []
    for r in rows:
        per_entry = r.get("requests_per_entry")
        lines.append(
            (
                str(r["system"]),
                str(r["replicas"]),
                str(r["writers"]),
                f"{r['writes_per_s']:,.0f}",
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                "-" if per_entry is None else f"{per_entry:.1f}",
                *role_cells(r),
            )
        )
    return table.render_table(lines, header=header, left=1)
