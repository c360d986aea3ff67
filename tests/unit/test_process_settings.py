"""Settings of a ``tally serve`` process as a whole, not of one ``Tally``: the collector's thresholds.

Invariants, in plain words:
- ``TALLY_GC_THRESHOLDS`` is three positive integers or ``python`` (Python's own thresholds);
  anything else is refused when the settings are read;
- building a serve process's app sets the thresholds it names, and ``python`` leaves them alone.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from tally.bootstrap import build_app
from tally.config import Settings


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _settings(tmp_path: Path, value: str) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'tally.db'}", gc_thresholds=value)


@pytest.mark.parametrize(("value", "parsed"), [("python", None), ("1000, 20,30", (1000, 20, 30))])
def test_the_thresholds_are_three_positive_integers_or_python(
    tmp_path: Path, value: str, parsed: tuple[int, int, int] | None
) -> None:
    assert _settings(tmp_path, value).gc_thresholds == parsed


def test_the_default_raises_the_young_generation_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TALLY_GC_THRESHOLDS", raising=False)
    assert Settings(database_url=f"sqlite:///{tmp_path / 'tally.db'}").gc_thresholds == (5_000, 20, 50)


@pytest.mark.parametrize("value", ["1000,20", "1000,20,30,40", "a,b,c", "0,10,10", "-1,10,10", ""])
def test_other_thresholds_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="TALLY_GC_THRESHOLDS"):
        _settings(tmp_path, value)


@pytest.mark.usefixtures("thresholds")
def test_a_serve_process_sets_the_thresholds_it_names(tmp_path: Path) -> None:
    gc.set_threshold(700, 10, 10)
    build_app(_settings(tmp_path, "1234,11,12"))
    assert gc.get_threshold() == (1234, 11, 12)


@pytest.mark.usefixtures("thresholds")
def test_python_leaves_the_thresholds_as_they_are(tmp_path: Path) -> None:
    gc.set_threshold(701, 11, 9)
    build_app(_settings(tmp_path, "python"))
    assert gc.get_threshold() == (701, 11, 9)
