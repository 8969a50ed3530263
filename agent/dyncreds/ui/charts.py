"""The console's two charts as server-rendered SVG: pure functions of the data,
no scripts, no inline styles (the Content-Security-Policy allows neither).

Colour is never the only carrier: every mark has a <title>, the timeline labels
its rows and ticks, and the pages print the same numbers as a table beside the chart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from dyncreds.config import format_duration

WIDTH = 720
ROW = 28
LEFT = 150
PALETTE = 8  # CSS classes s0..s7


@dataclass(frozen=True)
class Span:
    """One lease on the timeline: issued -> served until -> revoke at (epoch seconds)."""

    label: str
    issued: float | None
    served_until: float | None
    revoke_at: float


def _x(t: float, lo: float, hi: float) -> float:
    return LEFT + (WIDTH - LEFT - 10) * (t - lo) / max(hi - lo, 1.0)


def _clock(t: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t))


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def timeline(spans: Sequence[Span], now: float) -> str:
    """Each lease a row: a solid bar while it is served, a hatched one until its
    revocation, a tick at the revocation; a dashed line at now."""
    if not spans:
        return ""
    lo = min([s.issued or now for s in spans] + [now])
    hi = max([s.revoke_at for s in spans] + [now])
    top = 18  # a band for the "now" label
    height = top + ROW * len(spans) + 24
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="lease timeline from {_stamp(lo)} to {_stamp(hi)}">'
    ]
    for i, span in enumerate(spans):
        y = top + 4 + i * ROW
        start = span.issued if span.issued is not None else now
        served = span.served_until if span.served_until is not None else start
        x0, x1, x2 = (_x(t, lo, hi) for t in (start, served, span.revoke_at))
        out.append(f'<text class="label" x="4" y="{y + 15}">{escape(span.label[:22])}</text>')
        if x1 > x0:
            out.append(
                f'<rect class="served" x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="18">'
                f"<title>{escape(span.label)}: served "
                f"{_stamp(start)} to {_stamp(served)}</title></rect>"
            )
        out.append(
            f'<rect class="waiting" x="{x1:.1f}" y="{y}" width="{max(x2 - x1, 1):.1f}" '
            f'height="18"><title>{escape(span.label)}: valid until revoked at '
            f"{_stamp(span.revoke_at)}</title></rect>"
        )
        out.append(f'<line class="revoke" x1="{x2:.1f}" x2="{x2:.1f}" y1="{y - 3}" y2="{y + 21}"/>')
    axis = height - 18
    xn = _x(now, lo, hi)
    out.append(f'<line class="now" x1="{xn:.1f}" x2="{xn:.1f}" y1="{top - 4}" y2="{axis}"/>')
    out.append(f'<text class="tick" x="{xn + 3:.1f}" y="12">now</text>')
    out.append(f'<text class="tick" x="{LEFT}" y="{axis + 14}">{_clock(lo)}</text>')
    out.append(
        f'<text class="tick end" x="{WIDTH - 10}" y="{axis + 14}">{_clock(hi)} '
        f"(+{format_duration(max(hi - now, 0))})</text>"
    )
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Buckets:
    """Hand-outs counted per time bucket and role."""

    start: float
    size: float
    roles: list[str]
    counts: list[dict[str, int]]


def bucket(events: Iterable[tuple[float, str]], start: float, end: float, n: int = 24) -> Buckets:
    size = max((end - start) / n, 1.0)
    counts: list[dict[str, int]] = [{} for _ in range(n)]
    roles: set[str] = set()
    for when, role in events:
        if start <= when <= end:
            i = min(int((when - start) / size), n - 1)
            counts[i][role] = counts[i].get(role, 0) + 1
            roles.add(role)
    return Buckets(start, size, sorted(roles), counts)


def handouts(b: Buckets) -> str:
    """Stacked bars, one per bucket, a band per role (colour and a title each)."""
    if not b.roles:
        return ""
    height, base, top = 170, 145, 10
    peak = max(sum(c.values()) for c in b.counts) or 1
    step = (WIDTH - LEFT) / len(b.counts)
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="credential hand-outs per {format_duration(b.size)}, by role">'
    ]
    for i, counts in enumerate(b.counts):
        x = LEFT + i * step
        y = float(base)
        for r, role in enumerate(b.roles):
            count = counts.get(role, 0)
            if not count:
                continue
            h = (base - top) * count / peak
            y -= h
            out.append(
                f'<rect class="s{r % PALETTE}" x="{x + 1:.1f}" y="{y:.1f}" '
                f'width="{step - 2:.1f}" height="{h:.1f}"><title>{escape(role)}: {count} at '
                f"{_stamp(b.start + i * b.size)}</title></rect>"
            )
    out.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH}" y1="{base}" y2="{base}"/>')
    out.append(f'<text class="tick" x="{LEFT}" y="{base + 16}">{_clock(b.start)}</text>')
    end = b.start + b.size * len(b.counts)
    out.append(f'<text class="tick end" x="{WIDTH - 4}" y="{base + 16}">{_clock(end)}</text>')
    out.append(f'<text class="tick" x="4" y="{top + 10}">{peak} max</text>')
    for r, role in enumerate(b.roles):  # the legend, as text beside a swatch
        y = 30 + r * 18
        out.append(f'<rect class="s{r % PALETTE}" x="4" y="{y}" width="12" height="12"/>')
        out.append(f'<text class="label" x="22" y="{y + 11}">{escape(role[:18])}</text>')
    out.append("</svg>")
    return "".join(out)
