"""Charts as inline SVG, drawn here (no JavaScript chart library: nothing is downloaded).

`line_chart` draws one or more series over days: a job's duration percentiles, its success rate,
the classification rate of failures. Pure: data in, SVG text out.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 36


@dataclass
class Series:
    label: str
    values: Sequence[float | None]  # one per x label; None: no data that day
    colour: str


def _nice_max(value: float) -> float:
    """A round axis top at or above `value`."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1) if value >= 1 else 0.1
    top = step
    while top < value:
        top += step
    return float(top)


def line_chart(title: str, xs: Sequence[str], series: Sequence[Series], *,
               y_max: float | None = None, unit: str = "") -> str:
    """`xs`: the x labels (days, oldest first). `y_max`: a fixed axis top (e.g. 100 for %)."""
    peak = max((v for s in series for v in s.values if v is not None), default=0.0)
    top = y_max if y_max is not None else _nice_max(peak)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = len(xs)

    def x_at(index: int) -> float:
        return LEFT + (plot_w * index / (count - 1) if count > 1 else plot_w / 2)

    def y_at(value: float) -> float:
        return TOP + plot_h * (1 - min(value, top) / top)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{html.escape(title)}</title>"]
    for tick in range(5):  # horizontal grid and the y axis labels
        value = top * tick / 4
        y = y_at(value)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#e3e7ee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="#667085">{_fmt(value)}{html.escape(unit)}</text>')
    every = max(1, count // 8)  # at most ~8 x labels
    for index, label in enumerate(xs):
        if index % every == 0 or index == count - 1:
            parts.append(f'<text x="{x_at(index):.1f}" y="{HEIGHT - BOTTOM + 16}" '
                         f'text-anchor="middle" font-size="11" fill="#667085">'
                         f"{html.escape(label)}</text>")
    if not count:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
                     'fill="#667085">no data in this range</text>')
    for position, line in enumerate(series):
        points = [(x_at(i), y_at(v)) for i, v in enumerate(line.values) if v is not None]
        colour = html.escape(line.colour)
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline class="series" data-label="{html.escape(line.label)}" '
                         f'fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for (x, y), value in zip(points, [v for v in line.values if v is not None],
                                 strict=True):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                         f"<title>{html.escape(line.label)}: {_fmt(value)}{html.escape(unit)}"
                         "</title></circle>")
        legend_x = LEFT + 8 + position * 150
        parts.append(f'<rect x="{legend_x}" y="{HEIGHT - 14}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{legend_x + 14}" y="{HEIGHT - 5}" '
                     f'font-size="11">{html.escape(line.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}"
