"""The results of `gcs-ha bench kv`: ratios against Ray, medians over runs, the text table.

A row is one dict per system x op x clients (see gcs_ha.bench.kv for its fields).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from gcs_ha import table
from gcs_ha.bench.cpu import ROLE_TITLES, role_cells

KEY = ("system", "op", "clients")
RATIO_BASES = (("ray-redis", "vs_ray_redis"), ("ray-memory", "vs_ray_memory"))


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """On every gcs-ha-3 row: its ops/s over ray-redis's and ray-memory's (same op, clients)."""
    by = {(r["system"], r["op"], r["clients"]): r for r in rows}
    for row in rows:
        if row["system"] != "gcs-ha-3":
            continue
        for base, field in RATIO_BASES:
            other = by.get((base, row["op"], row["clients"]))
            if other and other["ops_per_s"]:
                row[field] = round(row["ops_per_s"] / other["ops_per_s"], 3)
    return rows


def median_rows(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (system, op, clients): the median of every numeric field over several runs."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run:
            groups.setdefault(tuple(row[k] for k in KEY), []).append(row)
    out = []
    for rows in groups.values():
        merged = dict(rows[0])
        for key, value in rows[0].items():
            if key in KEY or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
            merged[key] = round(statistics.median(values), 3)
        merged["runs"] = len(rows)
        out.append(merged)
    return out


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The human-readable table. The last three columns: CPU ms per op of the leader's
    front end, of its consensus process, and of one follower (gcs-ha only)."""
    header = ("SYSTEM", "OP", "CLIENTS", "OPS/S", "P50 MS", "P99 MS", "ERR", "SRV CORES",
              "SRV CPU MS/OP", "CLI CORES", *ROLE_TITLES)  # fmt: skip
    lines: list[tuple[str, ...]] = []
    for r in rows:
        lines.append(
            (
                r["system"],
                r["op"],
                str(r["clients"]),
                f"{r['ops_per_s']:,.0f}",
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                str(r.get("errors", 0)),
                f"{r.get('server_cores', 0):.2f}",
                _ms(r.get("server_cpu_ms_per_op")),
                f"{r.get('client_cores', 0):.2f}",
                *role_cells(r),
            )
        )
    return table.render_table(lines, header=header, left=2)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per op and client count: gcs-ha-3 ops/s against Ray's, as ratios."""
    lines = []
    for row in rows:
        if row["system"] == "gcs-ha-3":
            parts = [f"{row[field]:.2f}x {base}" for base, field in RATIO_BASES if field in row]
            if parts:
                lines.append(
                    f"{row['op']}, {row['clients']} clients: gcs-ha-3 = " + ", ".join(parts)
                )
    return lines
