"""Progress and log output for sync runs: a bar on a terminal, key=value lines otherwise.

Everything goes to stderr so stdout stays for reports. Values are passed through as given, so
callers must redact URLs (`sync.settings.redact_url`) before logging them; nothing here ever
sees a password.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

_INTERVAL = 0.2  # seconds between terminal redraws
_LOG_INTERVAL = 5.0  # seconds between progress lines in a log


def _fmt(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return text


class Reporter:
    def __init__(
        self, stream: TextIO | None = None, tty: bool | None = None, interval: float | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = (
            interval if interval is not None else _INTERVAL if self.tty else _LOG_INTERVAL
        )
        self._last = 0.0
        self._bar = False

    def log(self, event: str, **fields: Any) -> None:
        self._clear_bar()
        line = " ".join([f"event={event}", *(f"{k}={_fmt(v)}" for k, v in fields.items())])
        print(line, file=self.stream, flush=True)

    def progress(self, job: str, rows: int, nbytes: int) -> None:
        """Rows and bytes read from the source so far (at most one line or redraw per interval)."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            spin = "|/-\\"[int(now * 4) % 4]
            self.stream.write(f"\r{spin} {job}: {rows:,} rows, {nbytes / 1e6:,.1f} MB ")
            self.stream.flush()
            self._bar = True
        else:
            self.log("progress", job=job, rows=rows, bytes=nbytes)

    def _clear_bar(self) -> None:
        if self._bar:
            self.stream.write("\r\033[K")
            self._bar = False
