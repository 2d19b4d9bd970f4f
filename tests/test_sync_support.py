"""Shared helpers for the sync tests (no tests here): a source/target database pair, jobs, and
ways to see exactly which target rows a run wrote (xmin per key, pg_stat_user_tables deltas)."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from sync.config import Job
from sync.engine import RunResult, run_job
from sync.progress import Reporter

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_names)}_{int(time.time() * 1000) % 100000}"


async def execute(url: str, sql: str, *args: Any) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def q(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(fetch(url, sql, *args))


def x(url: str, sql: str, *args: Any) -> str:
    return asyncio.run(execute(url, sql, *args))


@dataclass
class Pair:
    """A source database and a target database on the test server."""

    source: str
    target: str

    def job(self, **kw: Any) -> Job:
        return Job.model_validate(kw)

    def sync(self, job: Job, **kw: Any) -> RunResult:
        rep = kw.pop("reporter", None) or Reporter(stream=_Null(), tty=False)
        result: RunResult = asyncio.run(
            run_job(
                job,
                target_url=self.target,
                source_url=kw.pop("source_url", self.source),
                reporter=rep,
                **kw,
            )
        )
        return result

    def versions(self, table: str, key: str = "id") -> dict[Any, str]:
        """key -> xmin of every target row: a changed xmin means the row was written."""
        return {r[0]: r[1] for r in q(self.target, f"SELECT {key}, xmin::text FROM {table}")}

    def writes(self, table: str) -> tuple[int, int, int]:
        """Cumulative (inserted, updated, deleted) tuples of a target table from pg_stat.

        Waits until no sync backend is left, since a backend flushes its statistics at exit.
        """
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = q(
                self.target,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'r2sf sync%'",
            )
            if rows[0][0] == 0:
                break
            time.sleep(0.02)
        schema, _, name = table.rpartition(".")
        rows = q(
            self.target,
            "SELECT pg_stat_clear_snapshot(), n_tup_ins, n_tup_upd, n_tup_del"
            " FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
            schema or "public",
            name,
        )
        return (rows[0][1], rows[0][2], rows[0][3]) if rows else (0, 0, 0)


def changed(before: dict[Any, str], after: dict[Any, str]) -> set[Any]:
    """Keys inserted, updated or deleted between two `versions()` snapshots."""
    keys = set(before) | set(after)
    return {k for k in keys if before.get(k) != after.get(k)}


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
