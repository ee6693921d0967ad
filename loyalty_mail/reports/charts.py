"""Small SVG charts for the HTML report: grouped bars, estimates with intervals, lines over time.

Each function returns a `<figure>`: a visible caption and one self-contained `<svg>` (no scripts,
no fonts or images to fetch), with a `<title>` for screen readers and every value also written as
text, so the chart reads without colour and prints well. Labels are escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12"'


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def points(value: float) -> str:
    """A difference of rates, in percentage points: 0.037 -> '+3.7 pp'."""
    return f"{value * 100:+.1f} pp"


def count(value: float) -> str:
    return f"{value:,.0f}"


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    return Markup(f'<figure class="figure"><figcaption>{escape(title)}</figcaption>'
                  f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
                  f'height="{height}" viewBox="0 0 {width} {height}" {FONT}>'
                  f'<title>{escape(title)}</title>{"".join(body)}</svg></figure>')


def room_for(labels: Sequence[str], least: int = 150, most: int = 320) -> int:
    """Room for the longest category label at the charts' 12px font (about 7px a character),
    between `least` and `most`; a longer label is shortened by `_fit`."""
    return min(max(least, 7 * max(map(len, labels), default=0) + 16), most)


def _fit(label: str, width: int) -> str:
    """`label` cut with an ellipsis to what `width` pixels hold (the full label stays in a title)."""
    room = max((width - 16) // 7, 4)
    return label if len(label) <= room else label[:room - 1] + "\u2026"


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    parts = []
    for index, name in enumerate(names):
        left = x + index * 150
        parts.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{PALETTE[index % len(PALETTE)]}"/>'
                     f'<text x="{left + 14}" y="{y}">{escape(name)}</text>')
    return parts


def bar_chart(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
              fmt: Callable[[float], str] = percent, width: int = 640, label_width: int | None = None) -> Markup:
    """Horizontal bars: one group per category, one bar per series (None: no bar, shown as '-').
    `label_width` defaults to room for the longest category."""
    if label_width is None:
        label_width = room_for(categories)
    bar, gap = 14, 10
    group = bar * len(series) + gap
    height = 34 + group * len(categories) + 10
    values = [v for _, vs in series for v in vs if v is not None]
    top = max(values, default=0) or 1
    plot = width - label_width - 70
    body = _legend([name for name, _ in series], label_width, 16)
    for row, category in enumerate(categories):
        y0 = 30 + row * group
        body.append(f'<text x="{label_width - 8}" y="{y0 + group / 2}" text-anchor="end">{escape(_fit(category, label_width))}'
                    f'<title>{escape(category)}</title></text>')
        for index, (_, vs) in enumerate(series):
            value = vs[row]
            y = y0 + index * bar
            length = 0 if value is None else plot * value / top
            text = "-" if value is None else fmt(value)
            body.append(f'<rect class="bar" x="{label_width}" y="{y}" width="{length:.1f}" height="{bar - 2}" '
                        f'fill="{PALETTE[index % len(PALETTE)]}"><title>{escape(category)}: {text}</title></rect>'
                        f'<text x="{label_width + length + 4:.1f}" y="{y + bar - 4}">{text}</text>')
    body.append(f'<line x1="{label_width}" y1="26" x2="{label_width}" y2="{height - 8}" stroke="#94a3b8"/>')
    return _svg(width, height, title, body)


def interval_chart(title: str, rows: Sequence[tuple[str, float, float, float, bool]], width: int = 640) -> Markup:
    """One estimate per row with its interval as an error bar, and a line at zero.
    Rows: (label, estimate, low, high, flagged); flagged rows (small samples) are drawn hollow."""
    label_width, step = room_for([r[0] for r in rows]), 34
    height = 40 + step * len(rows)
    low = min([0.0, *(r[2] for r in rows)])
    high = max([0.0, *(r[3] for r in rows)])
    span = (high - low) or 1
    plot = width - label_width - 40

    def x(value: float) -> float:
        return label_width + 10 + plot * (value - low) / span

    body = [f'<line x1="{x(0):.1f}" y1="10" x2="{x(0):.1f}" y2="{height - 22}" stroke="#64748b" '
            f'stroke-dasharray="4 3"/><text x="{x(0):.1f}" y="{height - 8}" text-anchor="middle">0</text>']
    for row, (label, estimate, lo, hi, flagged) in enumerate(rows):
        y = 24 + row * step
        fill = "#ffffff" if flagged else PALETTE[0]
        body.append(
            f'<text x="{label_width - 8}" y="{y + 4}" text-anchor="end">{escape(_fit(label, label_width))}'
            f'<title>{escape(label)}</title></text>'
            f'<line class="error-bar" x1="{x(lo):.1f}" y1="{y}" x2="{x(hi):.1f}" y2="{y}" stroke="{PALETTE[0]}" '
            f'stroke-width="2"/>'
            f'<line x1="{x(lo):.1f}" y1="{y - 6}" x2="{x(lo):.1f}" y2="{y + 6}" stroke="{PALETTE[0]}" stroke-width="2"/>'
            f'<line x1="{x(hi):.1f}" y1="{y - 6}" x2="{x(hi):.1f}" y2="{y + 6}" stroke="{PALETTE[0]}" stroke-width="2"/>'
            f'<circle class="estimate" cx="{x(estimate):.1f}" cy="{y}" r="5" fill="{fill}" stroke="{PALETTE[0]}" '
            f'stroke-width="2"><title>{escape(label)}: {points(estimate)} ({points(lo)} to {points(hi)})'
            f'</title></circle>'
            f'<text x="{x(estimate):.1f}" y="{y + 18}" text-anchor="middle">{points(estimate)} '
            f'[{points(lo)}, {points(hi)}]</text>')
    return _svg(width, height, title, body)


def line_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
               fmt: Callable[[float], str] = percent, width: int = 640, height: int = 240) -> Markup:
    """Lines over `labels` (e.g. weeks); None leaves a gap. The last point of each line is labelled."""
    left, right, top_pad, bottom = 56, 70, 30, 40
    values = [v for _, vs in series for v in vs if v is not None]
    top = max(values, default=0) or 1
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    steps = max(len(labels) - 1, 1)

    def point(i: int, v: float) -> tuple[float, float]:
        return left + plot_w * i / steps, top_pad + plot_h * (1 - v / top)

    body = _legend([name for name, _ in series], left, 16)
    for fraction in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - fraction)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e2e8f0"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(top * fraction)}</text>')
    every = max(1, -(-len(labels) * 80 // plot_w))  # about 80 px per label
    shown = list(range(0, len(labels), every))
    if shown and len(labels) - 1 - shown[-1] >= every * 0.6:
        shown.append(len(labels) - 1)
    for i in shown:
        x, _ = point(i, 0)
        body.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{escape(labels[i])}</text>')
    for index, (name, vs) in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = [point(i, v) for i, v in enumerate(vs) if v is not None]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(f'<polyline class="line" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            last = [v for v in vs if v is not None][-1]
            x, y = points[-1]
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>'
                        f'<text x="{x + 6:.1f}" y="{y + 4:.1f}">{fmt(last)}</text>')
    return _svg(width, height, title, body)
