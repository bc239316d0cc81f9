"""The drill's timeline picture (inline SVG) and the small numeric helpers under it.

The pure functions (percentile, nice_step, bucket_width, bucketize, pack_rows, Scale) do
the arithmetic so it can be tested without drawing. The lanes and the size bound are in
DESIGN.md ("The report"). Nothing here raises on purpose.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from gcs_ha.drill.result import DrillResult, FaultOutage
from gcs_ha.testing.kvload import Op, Outcome, ack_times

SCATTER_LIMIT = 2000  # more ops than this: aggregate per bucket instead of one dot per op
MAX_BUCKETS = 600  # about 2 px per bucket at the default width
MIN_BUCKET_S = 0.1
WIDTH, LEFT, RIGHT = 1200, 120, 16
FAULT_ROW_H, OUTAGE_H, RATE_H, LAT_H = 16, 14, 90, 150
KIND_COLOURS = {
    "kill-leader": "#d62728",
    "kill-random": "#ff7f0e",
    "pause": "#9467bd",
    "partition-leader": "#8c564b",
    "partition-split": "#e377c2",
    "powerloss": "#17becf",
    "churn": "#bcbd22",
}
OK_COLOUR, FAIL_COLOUR, UNKNOWN_COLOUR = "#1f77b4", "#ff7f0e", "#d62728"
OUTAGE_COLOUR, P99_COLOUR = "#444444", "#9ecae1"


def percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank p-th percentile (0 < p <= 100), None for no values. Nearest rank
    always returns an observed value, which is what a reader expects of "p99 latency"."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def nice_step(span: float, target: int) -> float:
    """A step of 1, 2 or 5 times a power of ten that cuts `span` into about `target` parts."""
    raw = max(span, 1e-9) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def bucket_width(
    span: float, max_buckets: int = MAX_BUCKETS, minimum: float = MIN_BUCKET_S
) -> float:
    """The bucket width for a `span`-second run: `minimum` if that gives at most
    `max_buckets` buckets, else the smallest 1/2/5 step that does."""
    if span / minimum <= max_buckets:
        return minimum
    return max(minimum, nice_step(span, max_buckets))


@dataclass(frozen=True, slots=True)
class Bucket:
    """The operations that completed in one time bucket. Latencies in seconds."""

    ok: int = 0
    failed: int = 0
    unknown: int = 0
    p50: float | None = None  # of OK operations
    p99: float | None = None
    worst_bad: float | None = None  # the longest FAIL/UNKNOWN operation


def bucketize(ops: Iterable[Op], t0: float, width: float, count: int) -> list[Bucket]:
    """`count` buckets of `width` seconds from `t0`; an op falls in the bucket of its
    completion (ops outside the range go to the first or last bucket)."""
    ok: list[list[float]] = [[] for _ in range(count)]
    bad: list[list[float]] = [[] for _ in range(count)]
    unknown = [0] * count
    for op in ops:
        i = min(count - 1, max(0, int((op.end - t0) / width)))
        (ok if op.outcome is Outcome.OK else bad)[i].append(op.end - op.start)
        unknown[i] += op.outcome is Outcome.UNKNOWN
    return [
        Bucket(
            ok=len(ok[i]),
            failed=len(bad[i]) - unknown[i],
            unknown=unknown[i],
            p50=percentile(ok[i], 50),
            p99=percentile(ok[i], 99),
            worst_bad=max(bad[i], default=None),
        )
        for i in range(count)
    ]


def pack_rows(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """A row per interval (in input order) so that intervals in one row do not overlap;
    greedy by start, first row that is free, which is optimal for intervals."""
    rows_end: list[float] = []
    rows = [0] * len(intervals)
    for i in sorted(range(len(intervals)), key=lambda i: intervals[i][0]):
        start, end = intervals[i]
        row = next((r for r, e in enumerate(rows_end) if e <= start), len(rows_end))
        if row == len(rows_end):
            rows_end.append(end)
        rows_end[row] = end
        rows[i] = row
    return rows


@dataclass(frozen=True)
class Scale:
    """Maps [d0, d1] onto [r0, r1], linearly or by log10 (log: d0 > 0). Values outside
    the domain are clamped, so a stray point stays inside its lane."""

    d0: float
    d1: float
    r0: float
    r1: float
    log: bool = False

    def __call__(self, v: float) -> float:
        lo, hi, v = self.d0, self.d1, min(max(v, self.d0), self.d1)
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        frac = (v - lo) / (hi - lo) if hi > lo else 0.0
        return self.r0 + frac * (self.r1 - self.r0)


def span_of(result: DrillResult) -> float:
    """Seconds from the drill's start to the last thing on the timeline (at least 1 ms)."""
    last = max([result.ended, *(op.end for op in result.history), *(f.end for f in result.faults)])
    return max(last - result.started, 1e-3)


def outage_window(outage: FaultOutage, acks: Sequence[float]) -> tuple[float, float] | None:
    """Where to draw an outage (absolute times): from the last acknowledged write that
    completed before the fault began (the fault's start if none), `outage_s` long. The
    record holds only the length; the anchor follows kvload.outage_around's definition."""
    if outage.outage_s is None:
        return None
    i = bisect.bisect_right(acks, outage.fault.start)
    start = acks[i - 1] if i else outage.fault.start
    return start, start + outage.outage_s


def _colour(kind: str) -> str:
    return KIND_COLOURS.get(kind, "#7f7f7f")


def fault_label(kind: str, targets: Sequence[int]) -> str:
    return f"{kind} " + ",".join(f"r{t}" for t in targets)


def _n(v: float) -> str:
    return f"{v:.1f}"


def _rect(x0: float, x1: float, y: float, h: float, attrs: str, *, tip: str = "") -> str:
    """A rect from x0 to x1 (at least 1 px wide), with a tooltip if `tip`."""
    head = f'<rect x="{_n(x0)}" y="{_n(y)}" width="{_n(max(x1 - x0, 1))}" height="{_n(h)}" {attrs}'
    return f"{head}>{_title(tip)}</rect>" if tip else f"{head}/>"


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


class _Canvas:
    """SVG elements plus the shared x scale; lanes are added top to bottom."""

    def __init__(self, result: DrillResult, width: int) -> None:
        self.result = result
        self.span = span_of(result)
        self.x = Scale(0.0, self.span, LEFT, width - RIGHT)
        self.width = width
        self.y = 24.0
        self.parts: list[str] = []
        self.lanes: list[tuple[float, float]] = []

    def rel(self, t: float) -> float:
        return self.x(t - self.result.started)

    def lane_label(self, y: float, h: float, text: str) -> None:
        self.parts.append(f'<text x="4" y="{_n(y + h / 2 + 4)}">{escape(text)}</text>')
        self.lanes.append((y, h))


def _faults_lane(c: _Canvas) -> None:
    faults = c.result.faults
    boxes = [(c.rel(f.start), max(c.rel(f.end), c.rel(f.start) + 2)) for f in faults]
    labels = [fault_label(f.kind, f.targets) + (" ERROR" if f.error else "") for f in faults]
    reach = [(a, max(b, a + 6.5 * len(t) + 4)) for (a, b), t in zip(boxes, labels, strict=True)]
    rows = pack_rows(reach)
    height = FAULT_ROW_H * (max(rows, default=0) + 1)
    c.lane_label(c.y, height, "faults")
    for f, (a, b), row, label in zip(faults, boxes, rows, labels, strict=True):
        y = c.y + row * FAULT_ROW_H
        colour = _colour(f.kind)
        tip = f"{label}: +{f.start - c.result.started:.2f}s for {f.duration:.2f}s"
        tip += f" (leader r{f.leader})" if f.leader >= 0 else ""
        tip += "".join(f"; {s}" for s in (f.detail, f.error and f"ERROR {f.error}") if s)
        stroke = ' stroke="#000" stroke-width="2"' if f.error else ""
        c.parts.append(
            "<g>"
            + _rect(a, b, y + 1, FAULT_ROW_H - 2, f'fill="{colour}" fill-opacity="0.75"{stroke}')
            + f'<text x="{_n(a + 2)}" y="{_n(y + FAULT_ROW_H - 4)}">{escape(label)}</text>'
            f"{_title(tip)}</g>"
        )
    c.y += height + 4


def _outage_lane(c: _Canvas) -> None:
    acks = ack_times(c.result.history)
    c.lane_label(c.y, OUTAGE_H, "outage")
    for outage in c.result.outages:
        window = outage_window(outage, acks)
        if window is None:
            continue
        a, b = c.rel(window[0]), c.rel(window[1])
        label = fault_label(outage.fault.kind, outage.fault.targets)
        tip = f"outage {outage.outage_s:.3f} s around {label}"
        c.parts.append(_rect(a, b, c.y + 2, OUTAGE_H - 4, f'fill="{OUTAGE_COLOUR}"', tip=tip))
    c.y += OUTAGE_H + 4


def _step_path(c: _Canvas, width: float, values: Sequence[float], y: Scale) -> str:
    t0 = c.result.started
    points = [f"M{_n(c.rel(t0))} {_n(y(0))}"]
    for i, v in enumerate(values):
        points.append(f"L{_n(c.rel(t0 + i * width))} {_n(y(v))}")
        points.append(f"L{_n(c.rel(t0 + (i + 1) * width))} {_n(y(v))}")
    points.append(f"L{_n(c.rel(t0 + len(values) * width))} {_n(y(0))}")
    return "".join(points)


def _rate_lane(c: _Canvas, buckets: Sequence[Bucket], width: float) -> None:
    ok = [b.ok / width for b in buckets]
    bad = [(b.failed + b.unknown) / width for b in buckets]
    top = max([*ok, *bad, 1.0])
    y = Scale(0.0, top, c.y + RATE_H, c.y + 4)
    c.lane_label(c.y, RATE_H, "OK ops/s")
    c.parts.append(
        f'<path d="{_step_path(c, width, ok, y)}Z" fill="{OK_COLOUR}" fill-opacity="0.6">'
        f"{_title(f'OK operations per second ({width:g} s buckets)')}</path>"
        f'<path d="{_step_path(c, width, bad, y)}" fill="none" stroke="{UNKNOWN_COLOUR}">'
        f"{_title('FAIL + UNKNOWN completions per second')}</path>"
        f'<text x="{LEFT - 6}" y="{_n(c.y + 12)}" text-anchor="end">{top:.0f}</text>'
    )
    c.y += RATE_H + 6


def _latency_scale(c: _Canvas, latencies: Sequence[float]) -> Scale:
    lo = min((v for v in latencies if v > 0), default=1e-3)
    hi = max(latencies, default=1.0)
    d0 = 10 ** math.floor(math.log10(max(lo, 1e-5)))
    d1 = max(10 ** math.ceil(math.log10(max(hi, 1e-5))), d0 * 10)
    return Scale(d0, d1, c.y + LAT_H, c.y + 4, log=True)


def _latency_lane(c: _Canvas, buckets: Sequence[Bucket], width: float) -> None:
    ops = c.result.history
    c.lane_label(c.y, LAT_H, "latency")
    y = _latency_scale(c, [op.end - op.start for op in ops])
    decade = y.d0
    while decade <= y.d1 * 1.0001:
        c.parts.append(
            f'<line x1="{LEFT}" x2="{c.width - RIGHT}" y1="{_n(y(decade))}" y2="{_n(y(decade))}" '
            f'class="grid"/><text x="{LEFT - 6}" y="{_n(y(decade) + 4)}" text-anchor="end" '
            f'class="small">{_ms(decade)}</text>'
        )
        decade *= 10
    if len(ops) <= SCATTER_LIMIT:
        for op in ops:
            c.parts.append(_dot(c, op, y))
    else:
        _percentile_lines(c, buckets, width, y)
    c.y += LAT_H + 6


def _dot(c: _Canvas, op: Op, y: Scale) -> str:
    colour = {Outcome.OK: OK_COLOUR, Outcome.FAIL: FAIL_COLOUR}.get(op.outcome, UNKNOWN_COLOUR)
    at = f'cx="{_n(c.rel(op.end))}" cy="{_n(y(op.end - op.start))}"'
    if op.outcome is Outcome.OK:
        return f'<circle {at} r="1.5" fill="{colour}" fill-opacity="0.5"/>'
    tip = f"{op.outcome.name} {op.kind} {op.key!r} after {_ms(op.end - op.start)}: {op.error}"
    return f'<circle {at} r="3" fill="{colour}">{_title(tip)}</circle>'


def _percentile_lines(c: _Canvas, buckets: Sequence[Bucket], width: float, y: Scale) -> None:
    t0 = c.result.started
    for name, colour in (("p99", P99_COLOUR), ("p50", OK_COLOUR)):
        d, pen = [], "M"
        for i, b in enumerate(buckets):
            v = b.p50 if name == "p50" else b.p99
            if v is None:
                pen = "M"
                continue
            d.append(f"{pen}{_n(c.rel(t0 + (i + 0.5) * width))} {_n(y(v))}")
            pen = "L"
        c.parts.append(
            f'<path d="{"".join(d)}" fill="none" stroke="{colour}" stroke-width="1.5">'
            f"{_title(f'{name} latency of OK operations per {width:g} s')}</path>"
        )
    for i, b in enumerate(buckets):
        if b.worst_bad is not None:
            colour = UNKNOWN_COLOUR if b.unknown else FAIL_COLOUR
            tip = f"+{i * width:.1f}s: {b.failed} failed, {b.unknown} unknown"
            c.parts.append(
                f'<circle cx="{_n(c.rel(t0 + (i + 0.5) * width))}" cy="{_n(y(b.worst_bad))}" '
                f'r="3" fill="{colour}">{_title(tip)}</circle>'
            )


def _legend(c: _Canvas) -> None:
    kinds = dict.fromkeys(f.kind for f in c.result.faults)
    items: list[tuple[str, str]] = [(_colour(k), k) for k in kinds]
    items += [(OUTAGE_COLOUR, "client outage"), (OK_COLOUR, "OK"), (FAIL_COLOUR, "FAIL")]
    items += [(UNKNOWN_COLOUR, "UNKNOWN / failed+unknown per s")]
    if len(c.result.history) > SCATTER_LIMIT:
        items += [(P99_COLOUR, "p99 (OK)"), (OK_COLOUR, "p50 (OK)")]
    x, c.y = float(LEFT), c.y + 10
    for colour, text in items:
        width = 18 + 6.5 * len(text)
        if x + width > c.width - RIGHT:
            x, c.y = float(LEFT), c.y + 18
        c.parts.append(
            _rect(x, x + 12, c.y, 12, f'fill="{colour}"')
            + f'<text x="{_n(x + 16)}" y="{_n(c.y + 10)}">{escape(text)}</text>'
        )
        x += width + 12
    c.y += 24


def _axis(c: _Canvas, top: float, bottom: float) -> str:
    step = nice_step(c.span, 12)
    parts, t = [], 0.0
    while t <= c.span + 1e-9:
        x = _n(c.x(t))
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{_n(top)}" y2="{_n(bottom)}" class="grid"/>'
            f'<text x="{x}" y="{_n(top - 6)}" text-anchor="middle">{t:g}s</text>'
        )
        t = round(t + step, 9)
    return "".join(parts)


def _shading(c: _Canvas, top: float, bottom: float) -> str:
    return "".join(
        _rect(
            c.rel(f.start),
            c.rel(f.end),
            top,
            bottom - top,
            f'fill="{_colour(f.kind)}" opacity=".1"',
        )
        for f in c.result.faults
    )


def timeline_svg(result: DrillResult, width: int = WIDTH) -> str:
    """The timeline as one <svg> element: well-formed XML, no external references (and no
    xmlns: inline SVG in HTML needs none, and the page then holds no URL at all)."""
    c = _Canvas(result, width)
    width_s = bucket_width(c.span)
    buckets = bucketize(result.history, result.started, width_s, math.ceil(c.span / width_s))
    _faults_lane(c)
    _outage_lane(c)
    data_top = c.y
    _rate_lane(c, buckets, width_s)
    _latency_lane(c, buckets, width_s)
    data_bottom = c.y - 6
    _legend(c)
    background = _axis(c, 24, data_bottom) + _shading(c, data_top, data_bottom)
    frames = "".join(_rect(LEFT, width - RIGHT, y, h, 'class="lane"') for y, h in c.lanes)
    return (
        f'<svg width="{width}" height="{_n(c.y)}" '
        f'viewBox="0 0 {width} {_n(c.y)}" font-family="sans-serif" font-size="11">'
        f"<style>.grid{{stroke:#e4e4e4}}.lane{{fill:none;stroke:#bbb}}.small{{font-size:9px}}</style>"
        f"{background}{frames}{''.join(c.parts)}</svg>"
    )
