"""Heroku Connect mapped tables as a sync target: ownership, Salesforce's values, the budget.

Every row written to a mapped table becomes a Salesforce API write and every row deleted there
deletes a Salesforce record, so a Heroku Connect job (`heroku_connect = { external_id = … }`):

- only updates or deletes rows it **owns**: rows whose external ID it inserted (or adopted),
  kept per job and mapping (target table and external ID column) in `r2sf.hc_owned`, never in the mapped table (Heroku Connect manages its
  schema). Records created in Salesforce (NULL external ID), IDs typed by hand and rows of
  other jobs are never touched, counted or sampled as deletes; a warehouse row whose external ID
  is taken by a row it does not own is left alone and reported as "not owned".
- compares and writes values **as Salesforce stores them** (`stored_value`), so what Heroku
  Connect writes back is not seen as a change on the next run;
- stops before writing more than its change budget, with an estimate of the push time.

This module builds SQL fragments and runs the ownership bookkeeping; `sync.load` calls it.
"""

from __future__ import annotations

from typing import Any

from odata.ident import ident
from sync.config import Job

# Heroku Connect pushes about 55-65 records per second to Salesforce (Heroku's published figure
# for writes through the trigger log); estimates use the range.
PUSH_RATE = (55, 65)

# The run's private copy of the job's owned external IDs (a temporary table).
OWNED = "r2sf_owned"

_TEXT = frozenset({25, 1042, 1043})
_TIMESTAMP = frozenset({1114, 1184})
_TIME = frozenset({1083, 1266})
_FLOAT = frozenset({700, 701})
# What Salesforce trims from text and picklist values.
_WHITESPACE = "E' \\t\\r\\n'"


def stored_value(expr: str, type_oid: int, type_sql: str, scale: int | None) -> str:
    """SQL for the value Salesforce keeps when `expr` (of the column's type) is written.

    Text: trimmed, and empty is NULL (Heroku Connect writes NULL text back as '' after a
    Bulk API read). Checkbox: never NULL. DateTime and Time: milliseconds. Numbers: the field's
    scale, from the column's numeric(p, s) or from the job's `scale` setting for the double
    precision columns Heroku Connect maps Number, Currency and Percent fields to.
    """
    if type_oid in _TEXT:
        return f"nullif(btrim({expr}, {_WHITESPACE}), '')"
    if type_oid == 16:
        return f"coalesce({expr}, false)"
    if type_oid in _TIMESTAMP:
        return f"date_trunc('milliseconds', {expr})"
    if type_oid in _TIME:
        return f"CAST(date_trunc('milliseconds', CAST({expr} AS interval)) AS {type_sql})"
    if scale is not None and (type_oid in _FLOAT or type_oid == 1700):
        return f"CAST(round(CAST({expr} AS numeric), {scale}) AS {type_sql})"
    return expr


def owner(job: Job) -> tuple[str, str]:
    """The key of a job's owned IDs: (job name, `schema.table.external_id`).

    With the mapping in the key, a job pointed at another table or column starts owning
    nothing there, instead of claiming rows that happen to share an ID.
    """
    assert job.heroku_connect is not None
    return job.name, f"{job.target}.{job.heroku_connect.external_id}"


def owned(alias: str, external_id: str) -> str:
    """SQL that is true when target row `alias` belongs to the job (NULL for a NULL ID)."""
    # IN, not EXISTS: PostgreSQL hashes the owned IDs once instead of probing per row.
    return f"CAST({alias}.{ident(external_id)} AS text) IN (SELECT external_id FROM {OWNED})"


async def prepare(
    conn: Any, job: Job, target_sql: str, staging: str, key_join: str, adopt: bool
) -> int:
    """Copy the job's owned IDs into the run's temp table; adopt first when asked or pending.

    Adoption claims the target rows whose external ID the warehouse returns right now (never a
    NULL one): `r2sf sync --adopt`, or the first run of a job that ran before ownership was
    kept (migration 2). Returns the rows adopted. Runs inside the merge transaction, so a dry
    run or a failed run adopts nothing.
    """
    assert job.heroku_connect is not None
    ext = ident(job.heroku_connect.external_id)
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{OWNED}")
    await conn.execute(f"CREATE TEMP TABLE {OWNED} (external_id text PRIMARY KEY)")
    kept = await conn.fetchval("SELECT to_regclass('r2sf.hc_owned') IS NOT NULL")
    if kept:
        await conn.execute(
            f"INSERT INTO {OWNED} SELECT external_id FROM r2sf.hc_owned"
            " WHERE job = $1 AND mapping = $2",
            *owner(job),
        )
        pending = await conn.fetchval(
            "DELETE FROM r2sf.hc_adopt_pending WHERE job = $1 RETURNING true", job.name
        )
    else:  # a dry run before this version's first real run: as that run would see it
        pending = await conn.fetchval(
            "SELECT to_regclass('r2sf.sync_runs') IS NOT NULL"
        ) and await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM r2sf.sync_runs WHERE job = $1 AND status = 'ok')",
            job.name,
        )
    adopted = 0
    if adopt or pending:
        adopted = await conn.fetchval(
            f"WITH claimed AS (INSERT INTO {OWNED} SELECT CAST(t.{ext} AS text)"
            f" FROM {target_sql} t JOIN {staging} s ON {key_join} ON CONFLICT DO NOTHING"
            " RETURNING external_id) SELECT count(*) FROM claimed"
        )
        if kept:
            await conn.execute(
                f"INSERT INTO r2sf.hc_owned (job, mapping, external_id)"
                f" SELECT $1, $2, external_id FROM {OWNED} ON CONFLICT DO NOTHING",
                *owner(job),
            )
    await conn.execute(f"ANALYZE {OWNED}")
    return int(adopted)


def record_inserts(insert_sql: str, external_id: str) -> str:
    """Wrap an INSERT into the target so the external IDs it wrote become owned.

    The statement takes `owner(job)` as $1, $2 and returns the rows inserted.
    """
    ext = ident(external_id)
    return (
        f"WITH written AS ({insert_sql} RETURNING CAST({ext} AS text) AS id),"
        " kept AS (INSERT INTO r2sf.hc_owned (job, mapping, external_id)"
        " SELECT $1, $2, id FROM written"
        " ON CONFLICT DO NOTHING) SELECT count(*) FROM written"
    )


def record_deletes(delete_sql: str, external_id: str) -> str:
    """Wrap a DELETE from the target so the IDs it removed are no longer owned ($1, $2: owner)."""
    ext = ident(external_id)
    return (
        f"WITH gone AS ({delete_sql} RETURNING CAST({ext} AS text) AS id),"
        " released AS (DELETE FROM r2sf.hc_owned h USING gone"
        " WHERE h.job = $1 AND h.mapping = $2 AND h.external_id = gone.id)"
        " SELECT count(*) FROM gone"
    )


def push_estimate(rows: int) -> str:
    """How long Heroku Connect takes to push `rows` to Salesforce: "about 13-15 min"."""
    fast, slow = rows / PUSH_RATE[1], rows / PUSH_RATE[0]  # seconds
    if slow < 60:
        return "under a minute"
    if slow < 90 * 60:
        lo, hi, unit = f"{fast / 60:.0f}", f"{slow / 60:.0f}", "min"
    else:
        lo, hi, unit = f"{fast / 3600:.1f}", f"{slow / 3600:.1f}", "h"
    return f"about {lo} {unit}" if lo == hi else f"about {lo}-{hi} {unit}"


def unique_identifier_problem(
    table: str, column: str, indexes: list[tuple[str, set[str]]]
) -> str | None:
    """Why the external ID is not the mapping's Unique Identifier, or None when it is.

    Heroku Connect creates a unique index named `hcu_idx_<table>_<field>` for the field marked
    as the mapping's Unique Identifier and upserts on it; an index made by hand is neither used
    by Heroku Connect nor kept when it rebuilds the table.
    """
    for name, cols in indexes:
        if name.startswith("hcu_idx_") and cols == {column}:
            return None
    return (
        f"'{column}' is not the Heroku Connect mapping's Unique Identifier (no unique index"
        f" hcu_idx_{table}_{column}); in the Heroku Connect dashboard open the mapping for"
        f" {table}, mark {column} as its Unique Identifier (the field must be an External ID in"
        " Salesforce) and save: Heroku Connect then creates the index. Do not create one by hand"
    )


async def report(
    conn: Any, schema: str, table: str, external_id: str | None = None
) -> dict[str, Any]:
    """What Heroku Connect has not yet pushed for a mapped table, and what it failed to push.

    `backlog`: trigger-log entries for the table in NEW or PENDING; `drain`: how long pushing
    them takes; `failed`: rows with `_hc_lastop = 'FAILED'`, with up to three `failures`
    (the external ID, else the sfid, and Salesforce's message from `_hc_err`).
    """
    out: dict[str, Any] = {}
    cols = {
        r[0]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = $2",
            schema,
            table,
        )
    }
    target = f"{ident(schema)}.{ident(table)}"
    if "_hc_lastop" in cols:
        out["failed"] = await conn.fetchval(
            f"SELECT count(*) FROM {target} WHERE _hc_lastop = 'FAILED'"
        )
        if out["failed"] and "_hc_err" in cols:
            key = next((c for c in (external_id or "", "sfid") if c in cols), "id")
            rows = await conn.fetch(
                f"SELECT coalesce({ident(key)}::text, 'id ' || id) AS k, _hc_err"
                f" FROM {target}"
                " WHERE _hc_lastop = 'FAILED' ORDER BY id LIMIT 3"
            )
            out["failures"] = [f"{r['k']}: {_clip(r['_hc_err'] or '')}" for r in rows]
    log = f"{ident(schema)}._trigger_log"
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", log):
        out["backlog"] = await conn.fetchval(
            f"SELECT count(*) FROM {log} WHERE table_name = $1 AND state IN ('NEW', 'PENDING')",
            table,
        )
        out["drain"] = push_estimate(out["backlog"]) if out["backlog"] else "nothing to push"
    return out


def _clip(v: str, n: int = 200) -> str:
    return v if len(v) <= n else v[:n] + "..."
