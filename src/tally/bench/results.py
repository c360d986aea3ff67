"""What one measurement of ``tally bench`` holds: counts, statuses, an HDR latency histogram and a
timeline.

Every part of the bench (the HTTP load generator, the raw database ceilings, pgbench) reports a
``Measured``, so the report treats them alike. Latencies are recorded in microseconds, from 1 µs to
60 s, with three significant digits (HdrHistogram); a value past 60 s is recorded as 60 s.

The timeline (the load generator's measurements only) places each request in the half second in
which it was sent, or meant to be sent in the open loop, with its latency and whether it failed: a
stall shows as the slice of the run where it happened, which a histogram of the whole run hides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_MICROS = 1
HIGHEST_MICROS = 60_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
P999_MIN_SAMPLES = 10_000  # below this, P99.9 is one or two samples: not reported
SLICE_SECONDS = 0.5  # the timeline's resolution


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_MICROS, HIGHEST_MICROS, SIGNIFICANT_DIGITS)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (``fraction`` 0.99 for P99)."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def record(histogram: HdrHistogram, seconds: float) -> None:
    """Record one latency, given in seconds."""
    micros = round(seconds * 1_000_000)
    histogram.record_value(min(max(micros, LOWEST_MICROS), HIGHEST_MICROS))


@dataclass
class Slice:
    """The requests sent in one slice of the timeline."""

    requests: int = 0
    errors: int = 0  # outcomes other than 2xx, transport errors and refusals included
    latencies: list[float] = field(default_factory=list)  # seconds, of the answered ones

    def as_json(self, at: float) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def ms(fraction: float) -> float | None:
            return round(percentile(ordered, fraction) * 1000, 3) if ordered else None

        return {
            "at_s": at,
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": ms(1.0),
        }


@dataclass
class Timeline:
    """Requests by the slice of the run they were (meant to be) sent in; see the module docstring."""

    slice_seconds: float = SLICE_SECONDS
    slices: dict[int, Slice] = field(default_factory=dict)

    def add(self, sent_after: float, latency: float | None, *, failed: bool) -> None:
        """One request, sent ``sent_after`` seconds into the window; ``latency`` None: no answer."""
        number = max(0, int(sent_after // self.slice_seconds))
        found = self.slices.get(number)
        if found is None:
            found = self.slices[number] = Slice()
        found.requests += 1
        found.errors += failed
        if latency is not None:
            found.latencies.append(latency)

    def as_json(self) -> list[dict[str, Any]]:
        """Every slice from the first to the last, an empty one (a total stall) included."""
        if not self.slices:
            return []
        return [
            self.slices.get(number, Slice()).as_json(round(number * self.slice_seconds, 3))
            for number in range(max(self.slices) + 1)
        ]


@dataclass
class Measured:
    """One scenario on one database, measured once.

    ``units_per_request`` is how many transfers one request carries (1000 for a batch), so that
    ``units_per_second`` compares a batch with single transfers; reads count 1 each.
    ``statuses`` counts outcomes: an HTTP status with its problem code (``"201"``,
    ``"409 insufficient_funds"``) or a transport error (``"error ConnectError"``).
    """

    scenario: str
    database: str
    mode: str  # "open" (requests on a schedule) or "closed" (each client sends when answered)
    clients: int
    seconds: float
    intended_rate: float | None = None  # requests/s asked for, open loop only
    units_per_request: int = 1
    statuses: Counter[str] = field(default_factory=Counter)
    histogram: HdrHistogram = field(default_factory=new_histogram)
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        """Outcomes other than 2xx."""
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    @property
    def achieved_rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def units_per_second(self) -> float:
        return self.achieved_rate * self.units_per_request

    def percentile_ms(self, percentile: float) -> float | None:
        """The latency at ``percentile`` in milliseconds; None for P99.9 under 10,000 samples."""
        count = self.histogram.get_total_count()
        if count == 0 or (percentile >= 99.9 and count < P999_MIN_SAMPLES):
            return None
        return float(self.histogram.get_value_at_percentile(percentile)) / 1000

    def max_ms(self) -> float | None:
        return None if self.histogram.get_total_count() == 0 else self.histogram.get_max_value() / 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "database": self.database,
            "mode": self.mode,
            "clients": self.clients,
            "seconds": round(self.seconds, 3),
            "intended_rate": self.intended_rate,
            "achieved_rate": round(self.achieved_rate, 1),
            "units_per_request": self.units_per_request,
            "units_per_second": round(self.units_per_second, 1),
            "requests": self.requests,
            "errors": self.errors,
            "statuses": dict(sorted(self.statuses.items())),
            "latency_ms": {
                **{f"p{percentile:g}": self.percentile_ms(percentile) for percentile in PERCENTILES},
                "max": self.max_ms(),
            },
            "histogram": self.histogram.encode().decode(),  # HdrHistogram's compressed base64 form
            "timeline": {"slice_seconds": self.timeline.slice_seconds, "slices": self.timeline.as_json()},
        }
