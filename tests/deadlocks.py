"""Provoking a real deadlock in a test, and making sure the right session is its victim.

PostgreSQL looks for a deadlock once, `deadlock_timeout` after a session starts waiting for a
lock, and cancels the session whose look finds the cycle. A test sets up the cycle in two
steps: the session meant to be cancelled starts waiting, then the test's own session closes
the cycle. The victim's database gets VICTIM_WAIT (set before the victim connects: the setting
needs a superuser, as the tests' server has) and the test's session CLOSER_WAIT, so the victim
is the one cancelled even when the test's closing statement comes a second or two late on a
loaded machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

VICTIM_WAIT = "4s"
CLOSER_WAIT = "60s"


@asynccontextmanager
async def victim_waits(url: str) -> AsyncIterator[None]:
    """Sessions opened on `url`'s database while inside look for deadlocks after VICTIM_WAIT."""
    conn = await asyncpg.connect(url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        try:
            await conn.execute(f"ALTER DATABASE \"{name}\" SET deadlock_timeout = '{VICTIM_WAIT}'")
        except asyncpg.InsufficientPrivilegeError:
            pytest.skip("setting deadlock_timeout for the victim needs a superuser")
        try:
            yield
        finally:
            await conn.execute(f'ALTER DATABASE "{name}" RESET deadlock_timeout')
    finally:
        await conn.close()


async def closer(url: str) -> asyncpg.Connection:
    """The test's own session, which closes the cycle and must not be the one cancelled."""
    conn = await asyncpg.connect(url)
    await conn.execute(f"SET deadlock_timeout = '{CLOSER_WAIT}'")
    return conn


async def deadlocks(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    return count


async def wait_for_deadlock(conn: asyncpg.Connection, before: int, timeout: float = 15) -> int:
    """The database's deadlock count once it passes `before`: a backend reports its statistics
    some time after the event (at most about a second, or when it next goes idle)."""
    deadline = time.monotonic() + timeout
    while True:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        now = await deadlocks(conn)
        if now > before or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


async def wait_for_lock_wait(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    """Poll until a session matching `sql` (a WHERE clause on pg_stat_activity) waits for a
    lock; `conn` must not be inside a transaction (pg_stat_activity keeps its first reading)."""
    deadline = time.monotonic() + 30
    while not await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        f" AND datname = current_database() AND {sql}",
        *args,
    ):
        assert time.monotonic() < deadline, "the session never waited for the lock"
        await asyncio.sleep(0.02)
