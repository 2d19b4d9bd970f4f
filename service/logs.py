"""Log output: one JSON object per line in production, readable text on a terminal.

`LOG_FORMAT=json|text` chooses; by default JSON when stderr is not a terminal (a Heroku dyno,
a container), so log drains can index fields. Messages are passed through as the code wrote
them: callers redact URLs before logging (`sync.settings.redact_url`); nothing here does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

# The id of the request being answered (the X-Request-Id sent back to the client), set by
# service.app for the duration of each request: every record logged meanwhile carries it, so a
# Salesforce admin's request id finds its log lines.
request_id: ContextVar[str | None] = ContextVar("r2sf_request_id", default=None)

# Attributes every LogRecord has; anything else was passed as `extra=` and is emitted as a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        return text if rid is None else f"{text} [request {rid}]"


def _add_request_id(record: logging.LogRecord) -> bool:
    rid = request_id.get()
    if rid is not None and not hasattr(record, "request_id"):
        record.request_id = rid
    return True


def handler(stream: TextIO, *, json_lines: bool) -> logging.Handler:
    """A handler writing to `stream`, JSON lines or text, adding the current request id."""
    out = logging.StreamHandler(stream)
    out.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    out.addFilter(_add_request_id)
    return out


def use_json(environ: dict[str, str] | None = None, stream: object = None) -> bool:
    env = os.environ if environ is None else environ
    choice = env.get("LOG_FORMAT", "").strip().lower()
    if choice in ("json", "text"):
        return choice == "json"
    isatty = getattr(stream or sys.stderr, "isatty", None)
    return not (callable(isatty) and isatty())


def configure() -> None:
    """Set up the root logger once, from LOG_LEVEL and LOG_FORMAT."""
    root = logging.getLogger()
    root.handlers[:] = [handler(sys.stderr, json_lines=use_json())]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
