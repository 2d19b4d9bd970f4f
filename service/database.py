"""Connections to Heroku Postgres: the primary, its pooler and a follower.

Which connection does what (docs/architecture.md, "Past one dyno"):

- OData reads: the follower when one is configured (and has replayed what this process knows
  of; see `ODataService.reader`), else the pooler, else the primary.
- OData writes, catalogue loads, trigger installation, change tracking and delta reads, the
  change-log pruning: the primary through the pooler when there is one, else direct.
- The data-version listener (`LISTEN`) and the sync: `DATABASE_URL`, the primary direct. A
  pooler in transaction mode cannot keep a `LISTEN` session, and a follower never receives
  `NOTIFY`.

A pooled connection (PgBouncer in transaction mode) keeps no session state: no named prepared
statements (PgBouncer before 1.21 passes none through), and only the startup parameters
PgBouncer forwards. Statement timeouts are then enforced by the client, which cancels the query.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

# Startup parameters every PgBouncer forwards; anything else it refuses at connect time.
POOLER_SAFE_PARAMETERS = ("application_name", "TimeZone")


async def keep_session(_conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release `RESET ALL; UNLISTEN *; ...` round trip.

    Pool connections carry no session state to undo (no SET, LISTEN or session advisory locks;
    an open transaction is still rolled back by asyncpg), and the reset would double the
    database round trips of every request.
    """


def pool_options(*, pooled: bool, name: str, statement_timeout_s: int) -> dict[str, Any]:
    """`asyncpg.create_pool` keyword arguments for a direct or a pooled URL."""
    settings = {"TimeZone": "UTC", "application_name": name}
    if pooled:
        return {
            # PgBouncer in transaction mode hands each transaction to any server connection:
            # a statement prepared on one is unknown on the next.
            "statement_cache_size": 0,
            "server_settings": settings,
            # The server-side statement_timeout cannot be sent through the pooler.
            "command_timeout": statement_timeout_s,
        }
    return {
        "statement_cache_size": 1024,
        "server_settings": {
            **settings,
            # JIT compilation costs more than these short queries take.
            "jit": "off",
            # Salesforce gives up after 120 s; free the connection well before.
            "statement_timeout": f"{statement_timeout_s}s",
        },
    }


# On a follower: how far replay is behind what it has received, in seconds and bytes (0 when it
# has replayed everything it received: an idle primary is not lag).
REPLAY_LAG_SQL = """
SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8 AS seconds,
       coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8
         AS bytes,
       pg_is_in_recovery() AS follower
"""


async def replay_lag(pool: asyncpg.Pool) -> tuple[float, float] | None:
    """(seconds, bytes) of replay lag on a follower; None when it is not one."""
    async with pool.acquire(timeout=5) as conn:
        row = await conn.fetchrow(REPLAY_LAG_SQL)
    if row is None or not row["follower"]:
        return None
    return float(row["seconds"]), float(row["bytes"])


# -- what a URL leads to (`r2sf check`) ----------------------------------------------------------

PROBE_PARAMETER = "r2sf.pooler_probe"  # a placeholder setting PostgreSQL accepts at startup


async def is_pooler(url: str, timeout: float) -> bool:
    """True when a pooler answers at `url`: PostgreSQL accepts any dotted (placeholder)
    startup parameter, PgBouncer refuses one it does not know ("unsupported startup
    parameter")."""
    try:
        conn = await asyncpg.connect(
            url, timeout=timeout, statement_cache_size=0, server_settings={PROBE_PARAMETER: "1"}
        )
    except asyncpg.PostgresError as exc:
        if "startup parameter" in str(exc).lower():
            return True
        raise
    await conn.close()
    return False


async def prepared_statements_pass(url: str, timeout: float, holders: int = 8) -> bool | None:
    """Whether a statement prepared through the pooler at `url` can be run later on another
    server connection (PgBouncer >= 1.21 with max_prepared_statements); None when the pool
    has too few server connections to tell.

    A prepares a named statement on server connection S; other clients then open transactions
    until one holds S, so A's next execution must run elsewhere.
    """
    conns: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        conn = await asyncpg.connect(url, timeout=timeout, statement_cache_size=0)
        conns.append(conn)
        return conn

    try:
        a = await connect()
        async with a.transaction():
            s = await a.fetchval("SELECT pg_backend_pid()")
            statement = await a.prepare("SELECT 41 + 1", name="r2sf_check_probe")
        for _ in range(holders):
            b = await connect()
            await b.execute("BEGIN")
            if await b.fetchval("SELECT pg_backend_pid()") == s:
                try:
                    await asyncio.wait_for(statement.fetchval(), timeout)
                except asyncpg.InvalidSQLStatementNameError:
                    return False
                except TimeoutError:
                    return None  # no other server connection to run on
                return True
        return None
    finally:
        for conn in conns:
            conn.terminate()
