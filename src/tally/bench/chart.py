"""The latency chart: a self-contained HTML page with one inline SVG, no script, no fetch.

Latency by percentile, as HdrHistogram plots it: the x axis is the percentile on a log scale of
``1 / (1 - p)``, so that 90 %, 99 %, 99.9 %, 99.99 % are evenly spaced and the tail gets as much
room as the median; the y axis is the latency in milliseconds, log-scaled too, so that a batch of
1000 transfers and a balance read fit on one page. One line per measurement: colour by scenario
and mode, solid on SQLite, dashed on PostgreSQL; a ceiling is dotted, coloured by database too.
A line ends at the percentile its samples can resolve (``1 - 1/count``), at the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from tally.bench.results import Measured

WIDTH, HEIGHT = 1000, 560
LEFT, RIGHT, TOP, BOTTOM = 70, 300, 30, 60  # margins; the legend sits in the right one
POINTS_PER_DECADE = 24
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
DASHES = {"sqlite": "", "postgresql": "8 4"}
CEILING_DASH = "2 4"


@dataclass(frozen=True)
class Line:
    label: str
    measured: Measured
    ceiling: bool = False


def chart_html(lines: Sequence[Line], *, title: str, caption: str = "") -> str:
    """The page: ``title``, the chart of ``lines`` (those with samples), then ``caption`` as text."""
    drawn = [line for line in lines if line.measured.histogram.get_total_count() > 0]
    svg = _svg(drawn) if drawn else "<p>No latency was recorded.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:24px}"
        "pre{font-size:12px;overflow-x:auto}</style></head><body>\n"
        f"<h1>{escape(title)}</h1>\n{svg}\n<pre>{escape(caption)}</pre>\n</body></html>\n"
    )


def curve(measured: Measured) -> list[tuple[float, float]]:
    """(decades, milliseconds) points: decades = log10(1 / (1 - p)), from p = 0 to the last
    percentile ``count`` samples resolve, where the line ends at the maximum."""
    histogram = measured.histogram
    count = histogram.get_total_count()
    last = math.log10(count) if count > 1 else 0.0
    points = []
    step = 0
    while (decades := step / POINTS_PER_DECADE) < last:
        percentile = 100 * (1 - 10**-decades)
        points.append((decades, histogram.get_value_at_percentile(percentile) / 1000))
        step += 1
    points.append((last, histogram.get_max_value() / 1000))
    return points


def _svg(lines: Sequence[Line]) -> str:
    curves = [curve(line.measured) for line in lines]
    decades = max(2, math.ceil(max(points[-1][0] for points in curves)))
    values = [ms for points in curves for _, ms in points if ms > 0]
    low = math.floor(math.log10(min(values)))
    high = max(low + 1, math.ceil(math.log10(max(values))))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(decade: float) -> float:
        return LEFT + plot_w * decade / decades

    def y(ms: float) -> float:
        return TOP + plot_h * (1 - (math.log10(max(ms, 10.0**low)) - low) / (high - low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-size="12">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for decade in range(decades + 1):
        label = "0%" if decade == 0 else f"{100 * (1 - 10**-decade):.{max(0, decade - 2)}f}%"
        parts.append(_grid_x(x(decade), TOP, TOP + plot_h, label))
    for exponent in range(low, high + 1):
        for factor in (1, 2, 5):
            ms = factor * 10.0**exponent
            if 10.0**low <= ms <= 10.0**high:
                parts.append(_grid_y(y(ms), LEFT, LEFT + plot_w, f"{ms:g}", major=factor == 1))
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 15}" text-anchor="middle">percentile</text>'
        f'<text transform="translate(18 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        "latency (ms)</text>"
    )
    colours: dict[str, str] = {}
    for number, (line, points) in enumerate(zip(lines, curves, strict=True)):
        # A ceiling is always dotted, so its colour tells its database.
        database = line.measured.database if line.ceiling else ""
        key = f"{line.measured.scenario}/{line.measured.mode}/{database}"
        colour = colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
        dash = CEILING_DASH if line.ceiling else DASHES.get(line.measured.database, "")
        path = " ".join(f"{x(d):.1f},{y(ms):.1f}" for d, ms in points)
        style = f'fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"'
        parts.append(f'<polyline points="{path}" {style}><title>{escape(line.label)}</title></polyline>')
        legend_y = TOP + 10 + 18 * number
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 15}" y1="{legend_y}" x2="{WIDTH - RIGHT + 45}" y2="{legend_y}" '
            f'{style}/><text x="{WIDTH - RIGHT + 52}" y="{legend_y + 4}">{escape(line.label)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _grid_x(at: float, top: float, bottom: float, label: str) -> str:
    return (
        f'<line x1="{at:.1f}" y1="{top}" x2="{at:.1f}" y2="{bottom}" stroke="#ddd"/>'
        f'<text x="{at:.1f}" y="{bottom + 18}" text-anchor="middle">{label}</text>'
    )


def _grid_y(at: float, left: float, right: float, label: str, *, major: bool) -> str:
    stroke = "#ccc" if major else "#eee"
    return (
        f'<line x1="{left}" y1="{at:.1f}" x2="{right}" y2="{at:.1f}" stroke="{stroke}"/>'
        f'<text x="{left - 6}" y="{at + 4:.1f}" text-anchor="end">{label}</text>'
    )
