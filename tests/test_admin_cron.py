"""Schedules in words for the console, and their next times (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.admin.cron import describe, next_times


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 3 * * *", "every day at 03:00 UTC"),
        ("*/15 * * * *", "every 15 minutes"),
        ("5 * * * *", "every hour at minute 5"),
        ("30 */6 * * *", "every 6 hours at minute 30"),
        ("0 3 * * 0", "every Sunday at 03:00 UTC"),
        ("45 7 * * 1-5", "every weekday (Monday to Friday) at 07:45 UTC"),
        ("0 1 15 * *", "on day 15 of every month at 01:00 UTC"),
        ("0 9 1 1 *", "at minute 0, hour 9, day of month 1, month 1, weekday * (UTC)"),
        ("daily", "not a cron expression (minute hour day month weekday)"),
    ],
)
def test_a_schedule_reads_as_words(expr: str, words: str) -> None:
    assert describe(expr) == words


def test_the_next_five_times_follow_the_schedule_in_utc() -> None:
    after = datetime(2026, 12, 31, 22, 10, tzinfo=UTC)
    assert next_times("0 3 * * *", after) == [
        datetime(2027, 1, d, 3, 0, tzinfo=UTC) for d in range(1, 6)
    ]
    assert next_times("not cron", after) == []
