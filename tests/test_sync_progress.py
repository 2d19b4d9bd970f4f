"""Sync progress output: a redrawn bar on a terminal, parseable key=value lines otherwise."""

from __future__ import annotations

import io
import shlex

from sync.progress import Reporter


def test_log_lines_are_key_value_pairs_that_split_back_into_fields() -> None:
    out = io.StringIO()
    Reporter(stream=out, tty=False).log("done", job="category", error='bad "value" here', rows=3)
    fields = dict(part.split("=", 1) for part in shlex.split(out.getvalue()))
    assert fields == {"event": "done", "job": "category", "error": 'bad "value" here', "rows": "3"}


def test_terminal_gets_a_redrawn_bar_and_logs_clear_it() -> None:
    out = io.StringIO()
    rep = Reporter(stream=out, tty=True)
    rep.progress("sales", 5000, 2_500_000)
    assert out.getvalue().startswith("\r") and "sales: 5,000 rows, 2.5 MB" in out.getvalue()
    assert "\n" not in out.getvalue()
    rep.log("done", job="sales")
    assert out.getvalue().endswith("\r\033[Kevent=done job=sales\n")


def test_pipes_get_progress_as_log_lines_not_bars() -> None:
    out = io.StringIO()
    Reporter(stream=out, tty=False).progress("sales", 40, 2048)
    assert out.getvalue() == "event=progress job=sales rows=40 bytes=2048\n"
