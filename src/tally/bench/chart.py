"""The latency charts: a self-contained HTML page with inline SVGs, no script, no fetch.

First, latency by percentile, as HdrHistogram plots it: the x axis is the percentile on a log scale of
``1 / (1 - p)``, so that 90 %, 99 %, 99.9 %, 99.99 % are evenly spaced and the tail gets as much
room as the median; the y axis is the latency in milliseconds, log-scaled too, so that a batch of
1000 transfers and a balance read fit on one page. One line per measurement: colour by scenario
and mode, solid on SQLite, dashed on PostgreSQL; a ceiling is dotted, coloured by database too.
A line ends at the percentile its samples can resolve (``1 - 1/count``), at the maximum.

Then, for the load generator's measurements, the P99 over the run: each half second of the
timeline (``results.Timeline``) at the P99 of the requests sent in it, on the same log scale, in the
same colours. A stall that a whole-run percentile averages away shows there as a peak, at its time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
_Points = Sequence[tuple[float, float]]  # (x, milliseconds)


@dataclass(frozen=True)
class Line:
    label: str
    measured: Measured
    ceiling: bool = False


def chart_html(lines: Sequence[Line], *, title: str, caption: str = "") -> str:
    """The page: ``title``, the chart of ``lines`` (those with samples), then ``caption`` as text."""
    drawn = [line for line in lines if line.measured.histogram.get_total_count() > 0]
    svg = _svg(drawn) if drawn else "<p>No latency was recorded.</p>"
    timed = [(line, points) for line in drawn if (points := timeline(line.measured))]
    if timed:
        svg += "\n<h2>P99 over the run, by half second of sending</h2>\n" + _timeline_svg(timed)
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


def timeline(measured: Measured) -> list[tuple[float, float]]:
    """(seconds into the run, P99 in milliseconds) of each slice with an answered request."""
    return [
        (float(point["at_s"]), float(point["p99_ms"]))
        for point in measured.timeline.as_json()
        if point["p99_ms"] is not None
    ]


def _svg(lines: Sequence[Line]) -> str:
    curves = [curve(line.measured) for line in lines]
    decades = max(2, math.ceil(max(points[-1][0] for points in curves)))
    plot = _Plot(curves, lambda decade: decade / decades)
    for decade in range(decades + 1):
        label = "0%" if decade == 0 else f"{100 * (1 - 10**-decade):.{max(0, decade - 2)}f}%"
        plot.parts.append(_grid_x(plot.x(decade), TOP, TOP + plot.height, label))
    return plot.drawn(lines, curves, "percentile")


def _timeline_svg(timed: Sequence[tuple[Line, _Points]]) -> str:
    lines = [line for line, _ in timed]
    curves = [points for _, points in timed]
    seconds = max(1, math.ceil(max(at for points in curves for at, _ in points) + 0.5))
    plot = _Plot(curves, lambda at: at / seconds)
    step = 1 if seconds <= 20 else 5 if seconds <= 100 else 30
    for at in range(0, seconds + 1, step):
        plot.parts.append(_grid_x(plot.x(at), TOP, TOP + plot.height, f"{at}"))
    return plot.drawn(lines, curves, "seconds into the measurement (by intended send time)")


class _Plot:
    """One SVG: a log latency axis fitted to ``curves``, and ``share`` placing an x value in [0, 1]."""

    def __init__(self, curves: Sequence[_Points], share: Callable[[float], float]) -> None:
        values = [ms for points in curves for _, ms in points if ms > 0]
        self.low = math.floor(math.log10(min(values)))
        self.high = max(self.low + 1, math.ceil(math.log10(max(values))))
        self.width, self.height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
        self._share = share
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-size="12">',
            f'<rect x="{LEFT}" y="{TOP}" width="{self.width}" height="{self.height}" '
            'fill="none" stroke="#999"/>',
        ]
        for exponent in range(self.low, self.high + 1):
            for factor in (1, 2, 5):
                ms = factor * 10.0**exponent
                if 10.0**self.low <= ms <= 10.0**self.high:
                    grid = _grid_y(self.y(ms), LEFT, LEFT + self.width, f"{ms:g}", major=factor == 1)
                    self.parts.append(grid)

    def x(self, value: float) -> float:
        return LEFT + self.width * self._share(value)

    def y(self, ms: float) -> float:
        low, high = self.low, self.high
        return TOP + self.height * (1 - (math.log10(max(ms, 10.0**low)) - low) / (high - low))

    def drawn(self, lines: Sequence[Line], curves: Sequence[_Points], x_title: str) -> str:
        """The page's SVG: the axes' titles, then a line and a legend entry per measurement."""
        parts = self.parts
        parts.append(
            f'<text x="{LEFT + self.width / 2}" y="{HEIGHT - 15}" text-anchor="middle">'
            f"{escape(x_title)}</text>"
            f'<text transform="translate(18 {TOP + self.height / 2}) rotate(-90)" text-anchor="middle">'
            "latency (ms)</text>"
        )
        colours: dict[str, str] = {}
        for number, (line, points) in enumerate(zip(lines, curves, strict=True)):
            # A ceiling is always dotted, so its colour tells its database.
            database = line.measured.database if line.ceiling else ""
            key = f"{line.measured.scenario}/{line.measured.mode}/{database}"
            colour = colours.setdefault(key, PALETTE[len(colours) % len(PALETTE)])
            dash = CEILING_DASH if line.ceiling else DASHES.get(line.measured.database, "")
            path = " ".join(f"{self.x(at):.1f},{self.y(ms):.1f}" for at, ms in points)
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
