"""Structured logs: JSON lines in production, readable console output in development.

Every line carries the request id bound in ``observability.context``, or, for background work, the
name of its ``job``. Tally's own lines go through
structlog; the standard library's (uvicorn, SQLAlchemy, anything imported) are routed through the
same processors by a ``ProcessorFormatter`` on the root logger, so that every line on standard
error has one format, one timestamp field, the request id where there is one, and is redacted
(``observability.redaction``) before it is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from tally.observability.context import current_job, current_request_id, current_request_ids
from tally.observability.redaction import Redactor


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    job = current_job()
    if job is not None:
        event.setdefault("job", job)
    request_ids = current_request_ids()
    if request_ids is not None:
        event.setdefault("request_ids", list(request_ids))
    return event


class _Stderr:
    """The process's standard error as it is when a line is written, not when logging was set up.

    ``sys.stderr`` can be replaced after ``configure_logging`` (a test capturing output, then
    closing its capture): lines then go to the stream in place, never to a closed one.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR: Any = _Stderr()


def configure_logging(fmt: str, level: str = "INFO", *, secrets: Iterable[str] = ()) -> None:
    """``fmt`` is ``json`` or ``console``; ``secrets`` are literals never to be written (see redaction)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    redact = Redactor(secrets)
    stamped: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*stamped, structlog.processors.format_exc_info, redact, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(_STDERR),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_STDERR)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # Uvicorn's own access log is off (Tally writes one line per request); its error log stays.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
