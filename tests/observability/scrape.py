"""Reading ``/metrics`` in tests: samples by name and labels, and the names Tally exports."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tally.observability.metrics import Metrics

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def samples(text: str) -> list[Sample]:
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for sample in found
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def exported_names() -> set[str]:
    """Every sample name Tally can expose, whether or not it has samples yet."""
    names = set()
    for family in Metrics().collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names
