"""Sync state in the target database: the `r2sf` schema, its runs, watermarks and job locks.

The schema is created and migrated by sync/schema.py (on first use, at start-up and by
`r2sf migrate`). Run
records and watermarks are written on the caller's connection, inside the caller's merge
transaction, so data and state commit together. This module never touches target tables.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from sync.schema import LOCK_CLASS, migrate

# Job locks: key 1 is LOCK_CLASS ("r2sf"), key 2 a hash of the job name.


@dataclass(frozen=True)
class Watermark:
    column: str
    value: str
    value_type: str


@dataclass(frozen=True)
class Holder:
    pid: int
    application_name: str
    since: datetime | None

    def __str__(self) -> str:
        since = f", since {self.since:%Y-%m-%d %H:%M:%S %Z}" if self.since else ""
        return f"pid {self.pid}, application_name '{self.application_name}'{since}"


def job_lock_key(job: str) -> int:
    return zlib.crc32(job.encode()) & 0x7FFFFFFF


async def schema_exists(conn: Any) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('r2sf.watermarks') IS NOT NULL"))


async def try_lock(conn: Any, job: str) -> Holder | None:
    """Take the job's lock for the current transaction; None on success, else who holds it.

    Transaction-scoped: it ends with the transaction, so no connection (not even a server
    connection PgBouncer hands to someone else) can keep it by mistake."""
    got = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_CLASS, job_lock_key(job)
    )
    if got:
        return None
    row = await conn.fetchrow(
        """
        SELECT a.pid, coalesce(a.application_name, '') AS app,
               coalesce(a.xact_start, a.backend_start) AS since
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid = $1::int8::oid AND l.objid = $2::int8::oid
        LIMIT 1
        """,
        LOCK_CLASS,
        job_lock_key(job),
    )
    if row is None:  # released between the two statements
        return Holder(pid=0, application_name="unknown (just released)", since=None)
    return Holder(pid=row["pid"], application_name=row["app"], since=row["since"])


async def get_watermark(conn: Any, job: str) -> Watermark | None:
    if not await schema_exists(conn):
        return None
    row = await conn.fetchrow(
        "SELECT column_name, value, value_type FROM r2sf.watermarks WHERE job = $1", job
    )
    if row is None:
        return None
    return Watermark(row["column_name"], row["value"], row["value_type"])


async def set_watermark_from(conn: Any, job: str, column: str, expr: str, type_name: str) -> None:
    """Set the watermark to `expr` (a max() over staging) unless that is NULL (nothing read)."""
    await conn.execute(
        f"""
        INSERT INTO r2sf.watermarks AS w (job, column_name, value, value_type)
        SELECT $1, $2, v::text, $3 FROM (SELECT {expr} AS v) m WHERE v IS NOT NULL
        ON CONFLICT (job) DO UPDATE
        SET value = excluded.value, value_type = excluded.value_type,
            column_name = excluded.column_name, updated_at = now()
        """,
        job,
        column,
        type_name,
    )


async def record_run(
    conn: Any,
    job: str,
    started_at: datetime,
    status: str,
    full_refresh: bool,
    counts: dict[str, int],
    error: str | None = None,
) -> int:
    """Insert one finished run; called inside the merge transaction for successful runs."""
    run_id: int = await conn.fetchval(
        """
        INSERT INTO r2sf.sync_runs (job, started_at, finished_at, status, full_refresh, error,
            rows_read, rows_inserted, rows_updated, rows_unchanged, rows_deleted, rows_skipped,
            source_rows, target_rows, rows_not_owned)
        VALUES ($1, $2, clock_timestamp(), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        RETURNING id
        """,
        job,
        started_at,
        status,
        full_refresh,
        error,
        counts.get("read"),
        counts.get("inserted"),
        counts.get("updated"),
        counts.get("unchanged"),
        counts.get("deleted"),
        counts.get("skipped"),
        counts.get("source_rows"),
        counts.get("target_rows"),
        counts.get("not_owned"),
    )
    return run_id


async def record_failure(
    url: str, job: str, started_at: datetime, full_refresh: bool, error: str
) -> bool:
    """Record a failed run on a fresh connection (the run's own transaction was rolled back);
    True when it is the job's first failure since a successful run (or its first run)."""
    # No named prepared statements: the same code runs through a pooler in transaction mode.
    conn = await asyncpg.connect(
        url, timeout=30, server_settings={"TimeZone": "UTC"}, statement_cache_size=0
    )
    try:
        await migrate(conn)
        previous = await last_status(conn, job)
        await record_run(conn, job, started_at, "failed", full_refresh, {}, error)
        return previous != "failed"
    finally:
        await conn.close()


async def last_status(conn: Any, job: str) -> str | None:
    """'ok' or 'failed': how the job's latest recorded run ended (None before its first)."""
    if not await schema_exists(conn):
        return None
    status: str | None = await conn.fetchval(
        "SELECT status FROM r2sf.sync_runs WHERE job = $1 ORDER BY started_at DESC, id DESC"
        " LIMIT 1",
        job,
    )
    return status


async def last_full_run(conn: Any, job: str) -> datetime | None:
    """When the job's latest successful run that read everything started."""
    started: datetime | None = await conn.fetchval(
        "SELECT max(started_at) FROM r2sf.sync_runs WHERE job = $1 AND status = 'ok'"
        " AND full_refresh",
        job,
    )
    return started


async def last_runs(conn: Any) -> dict[str, datetime]:
    """Each job's latest recorded run start (ok or failed), for the scheduler's catch-up."""
    if not await schema_exists(conn):
        return {}
    rows = await conn.fetch("SELECT job, max(started_at) AS at FROM r2sf.sync_runs GROUP BY job")
    return {r["job"]: r["at"] for r in rows}
