"""Log lines go to the process's standard error as it is when each line is written.

``configure_logging`` once bound the ``sys.stderr`` of its call. A test that set up Tally while
capturing output (``capsys``) left every later logger of that process writing to the capture it
had closed: ``ValueError: I/O operation on closed file`` in an unrelated test, depending on the
order the tests ran in.
"""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from tally.observability.logging import configure_logging, get_logger


def test_lines_follow_stderr_when_it_is_replaced_after_logging_was_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("json", "INFO")
    log = get_logger("tally.test")
    log.warning("one")
    first.close()  # as a capture is closed at the end of its test

    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.warning("two")  # the same (cached) logger
    logging.getLogger("tally.stdlib").warning("three")  # a library's line, through the handler
    lines = [json.loads(line) for line in second.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["two", "three"]
