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
