"""Structured logs: configured once, one JSON object a line (console on a terminal).

Every value that came from a `${...}` reference in the bindings file is replaced by
`***` in any log line, in each form it may take, as a last line of defence: no message is
meant to carry one (connectors mask their own credentials where a server's text enters).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from connectors.secrets import Masker, credential_parts

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Redactor:
    """Masks every form of the bindings file's secrets (raw, base64 inside Basic auth,
    JSON-escaped, URL-encoded), however short, in log lines and in what the API answers."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {part for secret in secrets for part in credential_parts(secret)}
        self._masker = Masker(forms)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if not self._masker:
            return event
        return {key: self.clean(value) for key, value in event.items()}

    def clean(self, value: Any) -> Any:
        """`value` (a string, or lists and dicts of them) with every secret masked."""
        if not self._masker:
            return value
        if isinstance(value, str):
            return self._masker.mask(value)
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        if isinstance(value, dict):
            return {k: self.clean(v) for k, v in value.items()}
        return value


def configure_logging(
    *,
    level: str = "info",
    fmt: str | None = None,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    out = stream or sys.stdout
    console = fmt == "console" or (fmt is None and out.isatty())
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.format_exc_info,
        Redactor(secrets),
        structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer(default=str),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library: keep them quiet and on our stream.
    logging.basicConfig(stream=out, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
