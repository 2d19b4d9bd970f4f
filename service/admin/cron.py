"""Schedules in plain language ("every day at 03:00 UTC") and their next times, for the console."""

from __future__ import annotations

from datetime import datetime

from croniter import croniter

_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _num(v: str) -> int | None:
    return int(v) if v.isdigit() else None


def describe(expr: str) -> str:
    """The cron expression (UTC) in words; the common shapes by name, the rest field by field."""
    parts = expr.split()
    if len(parts) != 5 or not croniter.is_valid(expr):
        return "not a cron expression (minute hour day month weekday)"
    minute, hour, dom, month, dow = parts
    m, h = _num(minute), _num(hour)
    at = f"{h:02d}:{m:02d} UTC" if m is not None and h is not None else None
    if (minute, hour, dom, month, dow) == ("*", "*", "*", "*", "*"):
        return "every minute"
    if minute.startswith("*/") and (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return f"every {minute[2:]} minutes"
    if m is not None and (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return f"every hour at minute {m}"
    if m is not None and hour.startswith("*/") and (dom, month, dow) == ("*", "*", "*"):
        return f"every {hour[2:]} hours at minute {m}"
    if at and (dom, month, dow) == ("*", "*", "*"):
        return f"every day at {at}"
    if at and (dom, month) == ("*", "*") and dow.isdigit():
        return f"every {_DAYS[int(dow)]} at {at}"
    if at and (dom, month) == ("*", "*") and dow in ("1-5", "MON-FRI", "mon-fri"):
        return f"every weekday (Monday to Friday) at {at}"
    if at and dom.isdigit() and (month, dow) == ("*", "*"):
        return f"on day {dom} of every month at {at}"
    return (
        f"at minute {minute}, hour {hour}, day of month {dom}, month {month}, weekday {dow} (UTC)"
    )


def next_times(expr: str, after: datetime, n: int = 5) -> list[datetime]:
    if not croniter.is_valid(expr):
        return []
    it = croniter(expr, after)
    return [it.get_next(datetime) for _ in range(n)]
