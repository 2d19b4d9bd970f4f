"""A Heroku Connect stand-in for tests: the mapped-table schema, its trigger log, and write-back.

Heroku Connect itself cannot run here, so this builds what it leaves in Heroku Postgres and does
what it does to those tables, from Heroku's own documentation:

- "Heroku Connect Database Tables" (devcenter.heroku.com/articles/heroku-connect-database-tables):
  one lowercase table per object in schema `salesforce`, custom fields keep `__c`; the system
  columns `id` (serial primary key, "an implementation detail", renumbered on reload), `sfid`
  varchar(18) with a unique index, `systemmodstamp` timestamp (indexed), `createddate`,
  `isdeleted` boolean, `_hc_lastop` varchar(32) and `_hc_err` text; a field marked as the
  mapping's Unique Identifier gets a unique index named `hcu_idx_<table>_<field>`, other
  indexed fields `hc_idx_<table>_<field>`; bookkeeping in `_hcmeta`.
- "The Heroku Connect Trigger Log" (devcenter.heroku.com/articles/heroku-connect-trigger-log):
  changes go to `_trigger_log`, processed entries move to `_trigger_log_archive`; an INSERT
  captures all columns, an UPDATE "records only the changed values", a DELETE records just the
  delete, TRUNCATE is not captured; each entry has a state (NEW, PENDING, SUCCESS, FAILED,
  IGNORED, ...); after a successful insert Connect writes the new record's `sfid` back.
- "Writing Data to Salesforce with Heroku Connect" and "Heroku Connect Database Tables": a row
  written by the application shows `_hc_lastop = 'PENDING'` until Connect has pushed it, then
  `SYNCED` (or `INSERTED`/`UPDATED`), or `FAILED` with Salesforce's message in `_hc_err`.
- Help article "How does Heroku Connect sync null and empty values?": text fields that are
  NULL in Salesforce arrive as empty strings when Connect reads 20,000 or more changes through
  the Bulk API. Salesforce itself stores DateTimes at millisecond precision, numbers at the
  field's scale, checkboxes as true/false (never null), and trims text and picklist values
  (Salesforce Field Types reference, "Field Types" in the SOAP API Developer Guide).

Deviations, on purpose: `values`/`old` are jsonb instead of hstore (no extension needed; the
content is the same, column name -> text); Connect's own writes are told apart from the
application's by a session setting (`SET LOCAL r2sf_test.connect = 'on'`), as Connect's trigger
functions tell its sessions apart by a session setting of their own.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import asyncpg

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS salesforce;
CREATE TABLE IF NOT EXISTS salesforce._hcmeta (
    id serial PRIMARY KEY, hcver integer, org_id varchar(50), details text
);
CREATE TABLE IF NOT EXISTS salesforce._trigger_log (
    id bigserial PRIMARY KEY, txid bigint, created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(), processed_at timestamptz, processed_tx bigint,
    state varchar(8) NOT NULL DEFAULT 'NEW', action varchar(7), table_name varchar(128),
    record_id integer, sfid varchar(18), old jsonb, "values" jsonb, sf_result integer,
    sf_message text
);
CREATE INDEX IF NOT EXISTS _trigger_log_idx_state_id ON salesforce._trigger_log (state, id);
CREATE TABLE IF NOT EXISTS salesforce._trigger_log_archive (LIKE salesforce._trigger_log);

-- Connect's own sessions write without logging (a write-back is not a change to push).
CREATE OR REPLACE FUNCTION salesforce.hc_connect_session() RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT coalesce(current_setting('r2sf_test.connect', true), '') = 'on' $$;

-- BEFORE: a row the application writes is PENDING until Connect has pushed it.
CREATE OR REPLACE FUNCTION salesforce.hc_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT salesforce.hc_connect_session() THEN
        NEW._hc_lastop := 'PENDING';
        NEW._hc_err := NULL;
    END IF;
    RETURN NEW;
END $$;

-- AFTER: INSERT logs every column, UPDATE only the changed ones, DELETE just the delete.
CREATE OR REPLACE FUNCTION salesforce.hc_logger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    system text[] := ARRAY['id', 'sfid', 'systemmodstamp', 'createddate', 'isdeleted',
                           '_hc_lastop', '_hc_err'];
    changed jsonb;
BEGIN
    IF salesforce.hc_connect_session() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO salesforce._trigger_log (txid, action, table_name, record_id, "values")
        VALUES (txid_current(), 'INSERT', TG_TABLE_NAME, NEW.id, to_jsonb(NEW) - system);
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, n.value) INTO changed
        FROM jsonb_each(to_jsonb(NEW) - system) n
        JOIN jsonb_each(to_jsonb(OLD) - system) o USING (key)
        WHERE n.value IS DISTINCT FROM o.value;
        IF changed IS NOT NULL THEN
            INSERT INTO salesforce._trigger_log
                (txid, action, table_name, record_id, sfid, old, "values")
            VALUES (txid_current(), 'UPDATE', TG_TABLE_NAME, NEW.id, NEW.sfid,
                    (SELECT jsonb_object_agg(k, to_jsonb(OLD) -> k)
                     FROM jsonb_object_keys(changed) k), changed);
        END IF;
    ELSE
        INSERT INTO salesforce._trigger_log (txid, action, table_name, record_id, sfid, old)
        VALUES (txid_current(), 'DELETE', TG_TABLE_NAME, OLD.id, OLD.sfid,
                to_jsonb(OLD) - system);
    END IF;
    RETURN NULL;
END $$;
"""

# One Salesforce object's mapping: (column, Postgres type as Heroku Connect maps the field).
DEFAULT_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "varchar(80)"),
    ("external_id__c", "varchar(255)"),
    ("amount__c", "double precision"),  # Currency(16, 2)
    ("active__c", "boolean"),  # Checkbox
    ("closed__c", "timestamp"),  # DateTime
    ("note__c", "varchar(255)"),  # Text(255)
    ("region__c", "varchar(40)"),  # Picklist
)


def mapped_table_sql(
    table: str,
    fields: tuple[tuple[str, str], ...] = DEFAULT_FIELDS,
    unique_identifier: str | None = "external_id__c",
    indexed: tuple[str, ...] = (),
) -> str:
    """DDL for a mapped table as Connect creates it (call after SCHEMA_SQL)."""
    cols = ", ".join(f"{name} {typ}" for name, typ in fields)
    sql = [
        f"""CREATE TABLE salesforce.{table} (
            id serial PRIMARY KEY, sfid varchar(18), systemmodstamp timestamp,
            createddate timestamp, isdeleted boolean, _hc_lastop varchar(32), _hc_err text,
            {cols}
        )""",
        f"CREATE UNIQUE INDEX hcu_idx_{table}_sfid ON salesforce.{table} (sfid)",
        f"CREATE INDEX hc_idx_{table}_systemmodstamp ON salesforce.{table} (systemmodstamp)",
        f"CREATE TRIGGER hc_{table}_status_trigger BEFORE INSERT OR UPDATE ON salesforce.{table}"
        " FOR EACH ROW EXECUTE FUNCTION salesforce.hc_status()",
        f"CREATE TRIGGER hc_{table}_logtrigger AFTER INSERT OR UPDATE OR DELETE"
        f" ON salesforce.{table} FOR EACH ROW EXECUTE FUNCTION salesforce.hc_logger()",
    ]
    if unique_identifier:
        sql.append(
            f"CREATE UNIQUE INDEX hcu_idx_{table}_{unique_identifier}"
            f" ON salesforce.{table} ({unique_identifier})"
        )
    sql += [f"CREATE INDEX hc_idx_{table}_{c} ON salesforce.{table} ({c})" for c in indexed]
    return ";\n".join(sql)


_sfids = itertools.count(1)


def new_sfid(prefix: str = "a01") -> str:
    """An 18-character Salesforce record id."""
    return f"{prefix}{next(_sfids):012d}AAA"


@dataclass
class Salesforce:
    """How Salesforce stores a field's value: the normalisations Connect writes back.

    `scale` maps double precision columns to the field's decimal places; `bulk` reproduces a
    Bulk API read (20,000+ changes), where NULL text comes back as ''.
    """

    scale: dict[str, int] = field(default_factory=dict)
    bulk: bool = False

    def stored(self, column: str, typ: str) -> str:
        """SQL for the value Salesforce keeps for `column` (of Postgres type `typ`)."""
        c = f'"{column}"'
        if typ.startswith(("varchar", "character varying", "text")):
            return f"coalesce(btrim({c}), '')" if self.bulk else f"nullif(btrim({c}), '')"
        if typ == "boolean":
            return f"coalesce({c}, false)"
        if typ.startswith("timestamp"):
            return f"date_trunc('milliseconds', {c})"
        if typ == "double precision" and column in self.scale:
            return f"round({c}::numeric, {self.scale[column]})::double precision"
        return c


async def _columns(conn: Any, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        f"salesforce.{table}",
    )
    system = {"id", "sfid", "systemmodstamp", "createddate", "isdeleted", "_hc_lastop", "_hc_err"}
    return [(r[0], r[1]) for r in rows if r[0] not in system]


async def write_back_async(
    url: str,
    table: str,
    salesforce: Salesforce | None = None,
    fail: dict[str, str] | None = None,
    key: str = "external_id__c",
) -> int:
    """Push the table's NEW trigger-log entries to "Salesforce" and write the result back.

    Inserts get an sfid; every pushed row gets Salesforce's stored values and `SYNCED`; rows
    whose `key` is in `fail` get `FAILED` with that message (and no sfid, for an insert).
    Entries move to `_trigger_log_archive`. Returns the entries processed.
    """
    sf = salesforce or Salesforce()
    fail = fail or {}
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL r2sf_test.connect = 'on'")
            entries = await conn.fetch(
                "SELECT id, action, record_id FROM salesforce._trigger_log"
                " WHERE table_name = $1 AND state IN ('NEW', 'PENDING') ORDER BY id",
                table,
            )
            cols = await _columns(conn, table)
            sets = ", ".join(f'"{c}" = {sf.stored(c, t)}' for c, t in cols)
            for e in entries:
                if e["action"] == "DELETE":
                    state = "SUCCESS"
                else:
                    k = await conn.fetchval(
                        f'SELECT "{key}"::text FROM salesforce.{table} WHERE id = $1',
                        e["record_id"],
                    )
                    if k in fail:
                        await conn.execute(
                            f"UPDATE salesforce.{table} SET _hc_lastop = 'FAILED', _hc_err = $2"
                            " WHERE id = $1",
                            e["record_id"],
                            fail[k],
                        )
                        state = "FAILED"
                    else:
                        await conn.execute(
                            f"UPDATE salesforce.{table} SET {sets},"
                            " sfid = coalesce(sfid, $2), _hc_lastop = 'SYNCED', _hc_err = NULL,"
                            " systemmodstamp = date_trunc('milliseconds', now()::timestamp),"
                            " createddate = coalesce(createddate,"
                            " date_trunc('milliseconds', now()::timestamp)),"
                            " isdeleted = false WHERE id = $1",
                            e["record_id"],
                            new_sfid(),
                        )
                        state = "SUCCESS"
                if state == "FAILED":
                    await conn.execute(
                        "UPDATE salesforce._trigger_log SET state = 'FAILED',"
                        " sf_message = $2, processed_at = now() WHERE id = $1",
                        e["id"],
                        fail.get(k or "", ""),
                    )
                else:
                    await conn.execute(
                        "WITH moved AS (DELETE FROM salesforce._trigger_log WHERE id = $1"
                        " RETURNING *) INSERT INTO salesforce._trigger_log_archive"
                        " SELECT id, txid, created_at, now(), now(), txid_current(), 'SUCCESS',"
                        ' action, table_name, record_id, sfid, old, "values", 0, NULL'
                        " FROM moved",
                        e["id"],
                    )
            return len(entries)
    finally:
        await conn.close()


def write_back(url: str, table: str, **kw: Any) -> int:
    return asyncio.run(write_back_async(url, table, **kw))


async def create_in_salesforce_async(url: str, table: str, rows: list[dict[str, Any]]) -> None:
    """Records users create in Salesforce, as Connect mirrors them: sfid set, SYNCED, no log."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL r2sf_test.connect = 'on'")
            for row in rows:
                cols = list(row)
                await conn.execute(
                    f"INSERT INTO salesforce.{table} (sfid, _hc_lastop, isdeleted, createddate,"
                    f" systemmodstamp, {', '.join(cols)}) VALUES ($1, 'SYNCED', false,"
                    " now()::timestamp(3), now()::timestamp(3), "
                    + ", ".join(f"${i + 2}" for i in range(len(cols)))
                    + ")",
                    new_sfid(),
                    *row.values(),
                )
    finally:
        await conn.close()


def create_in_salesforce(url: str, table: str, rows: list[dict[str, Any]]) -> None:
    asyncio.run(create_in_salesforce_async(url, table, rows))


def log_entries(url: str, table: str, since_id: int = 0) -> list[asyncpg.Record]:
    """Trigger-log entries for the table (live and archived) after `since_id`, oldest first."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(
                await conn.fetch(
                    'SELECT id, action, state, "values", old FROM ('
                    " SELECT * FROM salesforce._trigger_log UNION ALL"
                    " SELECT * FROM salesforce._trigger_log_archive) l"
                    " WHERE table_name = $1 AND id > $2 ORDER BY id",
                    table,
                    since_id,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(go())


def last_log_id(url: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT coalesce(max(id), 0) FROM (SELECT id FROM salesforce._trigger_log"
                    " UNION ALL SELECT id FROM salesforce._trigger_log_archive) l"
                )
            )
        finally:
            await conn.close()

    return asyncio.run(go())
