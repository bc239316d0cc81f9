"""The results of `gcs-ha bench actors`: ratios against ray-memory, medians over runs, the
text table. A row is one dict per system x op (see gcs_ha.bench.actors for its fields).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from gcs_ha import table
from gcs_ha.bench.cpu import ROLE_TITLES, role_cells

BASE = "ray-memory"
RATIO = "vs_ray_memory"
RATES = ("actors_per_s", "pgs_per_s")


def measure_of(row: dict[str, Any]) -> tuple[str, float] | None:
    """(field, value) a row is compared on: its rate, or the memory row's RSS."""
    for key in (*RATES, "rss_mib"):
        if isinstance(row.get(key), int | float):
            return key, float(row[key])
    return None


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """On every row of another system: its rate (or RSS) over ray-memory's, same op."""
    base = {r["op"]: r for r in rows if r["system"] == BASE}
    for row in rows:
        other = base.get(row["op"])
        if row["system"] == BASE or other is None:
            continue
        mine, theirs = measure_of(row), measure_of(other)
        if mine and theirs and mine[0] == theirs[0] and theirs[1] > 0:
            row[RATIO] = round(mine[1] / theirs[1], 3)
    return rows


def median_rows(runs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (system, op): the median of every number over several runs (other fields as
    in the first run); adds `runs`."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run:
            groups.setdefault((row["system"], row["op"]), []).append(row)
    out = []
    for rows in groups.values():
        merged = dict(rows[0])
        for key, value in rows[0].items():
            if key == "count" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
            merged[key] = round(statistics.median(values), 3)
        merged.pop(RATIO, None)  # recomputed from the medians
        merged["runs"] = len(rows)
        out.append(merged)
    return add_ratios(out)


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The human-readable table. The last columns: CPU ms per actor or group of the
    leader's front end, its consensus process and one follower (gcs-ha only)."""
    header = ("SYSTEM", "OP", "COUNT", "SECONDS", "PER S", "RSS MIB", "VS RAY", *ROLE_TITLES)
    lines: list[tuple[str, ...]] = []
    for r in rows:
        rate = next((r[k] for k in RATES if k in r), None)
        ratio = r.get(RATIO)
        lines.append(
            (
                r["system"],
                r["op"],
                f"{r['count']:,}",
                f"{r['seconds']:.2f}" if "seconds" in r else "-",
                "error" if "error" in r else "-" if rate is None else f"{rate:,.1f}",
                f"{r['rss_mib']:,.1f}" if "rss_mib" in r else "-",
                "-" if ratio is None else f"{ratio:.2f}x",
                *role_cells(r),
            )
        )
    return table.render_table(lines, header=header, left=2)


def memory_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per memory row (which process, before/after, per actor, the followers)
    and per failed step (its error)."""
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"{r['system']}: {r['op']} failed: {r['error']}")
        if r["op"] != "memory":
            continue
        text = (
            f"{r['system']}: {r['process']} {r['rss_before_mib']:.0f} -> {r['rss_mib']:.0f} MiB "
            f"RSS ({r['anon_mib']:.0f} anon, peak {r['peak_mib']:.0f}) with {r['count']:,} "
            f"actors, {r['kib_per_actor']:.1f} KiB per actor"
        )
        if "frontend_rss_mib" in r:
            text += (
                f" (front end {r['frontend_rss_mib']:.0f}, "
                f"consensus {r['consensus_rss_mib']:.0f} MiB)"
            )
        followers = r.get("followers_rss_mib")
        if followers:
            text += "; " + ", ".join(f"{k} {v:.0f} MiB" for k, v in followers.items())
        lines.append(text)
    return lines
