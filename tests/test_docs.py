"""The documentation keeps its promises: ADRs have their four parts, and every ADR the code cites exists.

Invariants, in plain words:
- every decision record under ``docs/adr/`` has a title, then Context, Decision, Alternatives and
  Consequences as level-2 sections, in that order, each with something written under it;
- ADR numbers are unique and run 0001, 0002, ... without a gap;
- every ``ADR NNNN`` mentioned anywhere under ``src/`` names an ADR that exists;
- the README's quick start is the two commands that set Tally up on a fresh machine.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADR_DIR = ROOT / "docs" / "adr"
SECTIONS = ["Context", "Decision", "Alternatives", "Consequences"]
_ADR_FILE = re.compile(r"^(\d{4})-[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
_CITATION = re.compile(r"\bADR (\d{4})\b")
_HEADING = re.compile(r"^(#{1,6}) +(.+?) *$")


def adr_files() -> list[Path]:
    return sorted(ADR_DIR.glob("*.md"))


def adr_number(path: Path) -> str:
    match = _ADR_FILE.match(path.name)
    assert match is not None, f"{path.name} is not named NNNN-slug.md"
    return match.group(1)


def sections(text: str) -> list[tuple[str, str]]:
    """The level-2 sections of a Markdown text, as (heading, body); code blocks are skipped."""
    found: list[tuple[str, list[str]]] = []
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading is not None and len(heading.group(1)) == 2:
            found.append((heading.group(2), []))
        elif heading is not None and len(heading.group(1)) == 1:
            continue
        elif found:
            found[-1][1].append(line)
    return [(title, "\n".join(body).strip()) for title, body in found]


def test_there_are_decision_records() -> None:
    assert adr_files(), f"no ADRs under {ADR_DIR}"


@pytest.mark.parametrize("path", adr_files(), ids=lambda p: p.name)
def test_each_adr_has_the_four_sections_in_order_each_with_a_body(path: Path) -> None:
    found = sections(path.read_text(encoding="utf-8"))
    assert [title for title, _ in found] == SECTIONS, path.name
    for title, body in found:
        assert body, f"{path.name}: section {title!r} is empty"


@pytest.mark.parametrize("path", adr_files(), ids=lambda p: p.name)
def test_each_adr_opens_with_its_number_and_title_then_a_status(path: Path) -> None:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert re.fullmatch(rf"# {adr_number(path)}\. \S.*", lines[0]), f"{path.name}: {lines[0]!r}"
    assert lines[1].startswith("Status: "), f"{path.name}: {lines[1]!r}"


def test_adr_numbers_are_unique_and_consecutive_from_0001() -> None:
    numbers = [adr_number(path) for path in adr_files()]
    assert numbers == [f"{n:04d}" for n in range(1, len(numbers) + 1)]


def test_every_adr_cited_in_the_source_exists() -> None:
    existing = {adr_number(path) for path in adr_files()}
    missing = {
        f"ADR {number} (cited in {path.relative_to(ROOT)})"
        for path in sorted((ROOT / "src").rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".toml", ".txt", ".sql"}
        for number in _CITATION.findall(path.read_text(encoding="utf-8"))
        if number not in existing
    }
    assert not missing, sorted(missing)


def test_the_readme_quick_start_is_the_two_set_up_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "./scripts/serve.sh" in readme
    assert "./scripts/test.sh" in readme
    for script in ("serve.sh", "test.sh"):
        assert (ROOT / "scripts" / script).stat().st_mode & 0o111, f"scripts/{script} is not executable"
