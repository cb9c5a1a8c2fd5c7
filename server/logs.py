"""Structured logging: JSON lines (default) or text; ``extra={"job_id": ...}`` fields are kept."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter


class TextFormatter(logging.Formatter):
    """One line a record, its ``extra`` fields after the message as ``key=value`` (the JSON lines' fields: where a
    server listens, which job), as python-json-logger tells them from the record's own attributes."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        extras = {k: v for k, v in record.__dict__.items() if k not in RESERVED_ATTRS and not k.startswith("_")
                  and k != "taskName"}
        fields = "".join(f" {k}={v if isinstance(v, int | float) else repr(str(v))}" for k, v in extras.items())
        return super().formatMessage(record) + fields  # a traceback follows, as logging adds it


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=False))
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
