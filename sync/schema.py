"""The `r2sf` schema in the target database: one ordered list of migrations, and `migrate`.

Every object r2sf keeps in the target lives here, whoever uses it: the sync's runs, watermarks
and Heroku Connect ownership (sync/state.py, sync/heroku_connect.py) and the service's data
versions and change log (odata/versions.py, odata/changes.py), which odata/ reads and writes but
never creates. `r2sf migrate` (the Procfile's release phase), the service's start-up and every
sync run apply them; applied versions are recorded in `r2sf.schema_version`. A migration, once
released, is never edited: add the next one.
"""

from __future__ import annotations

from typing import Any

# Key 1 of every r2sf advisory lock ("r2sf" in ASCII); key 2 says what is locked.
LOCK_CLASS = 0x72327366 & 0x7FFFFFFF
MIGRATION_LOCK = 0  # odata/versions.py uses 1 and odata/changes.py 2 for their triggers

MIGRATIONS: list[str] = [
    # 1: runs and watermarks
    """
    CREATE TABLE r2sf.sync_runs (
        id bigserial PRIMARY KEY,
        job text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        status text NOT NULL CHECK (status IN ('ok', 'failed')),
        full_refresh boolean NOT NULL DEFAULT false,
        rows_read bigint,
        rows_inserted bigint,
        rows_updated bigint,
        rows_unchanged bigint,
        rows_deleted bigint,
        rows_skipped bigint,
        source_rows bigint,
        target_rows bigint,
        error text
    );
    CREATE INDEX sync_runs_job_started ON r2sf.sync_runs (job, started_at DESC);
    CREATE TABLE r2sf.watermarks (
        job text PRIMARY KEY,
        column_name text NOT NULL,
        value text NOT NULL,
        value_type text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: what each Heroku Connect job owns (sync/heroku_connect.py). Jobs that already ran
    # before ownership was kept adopt the rows their warehouse query returns on their next run.
    """
    CREATE TABLE r2sf.hc_owned (
        job text NOT NULL,
        mapping text NOT NULL,  -- target table and external ID column: schema.table.column
        external_id text NOT NULL,
        PRIMARY KEY (job, mapping, external_id)
    );
    CREATE TABLE r2sf.hc_adopt_pending (job text PRIMARY KEY);
    INSERT INTO r2sf.hc_adopt_pending SELECT DISTINCT job FROM r2sf.sync_runs WHERE status = 'ok';
    ALTER TABLE r2sf.sync_runs ADD COLUMN rows_not_owned bigint;
    """,
    # 3: data versions (odata/versions.py reads them; the triggers it installs bump them). Until
    # this migration the service created these at start-up with IF NOT EXISTS, so existing
    # databases already have them: every statement here must be idempotent.
    """
    CREATE SEQUENCE IF NOT EXISTS r2sf.data_version_seq;
    CREATE TABLE IF NOT EXISTS r2sf.data_versions (
        relid oid PRIMARY KEY,
        version bigint NOT NULL,
        changed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE OR REPLACE FUNCTION r2sf.bump_data_version() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        v bigint;
    BEGIN
        -- A statement that changed no row (a sync rerun with nothing new) keeps the version.
        -- (Nested: TRUNCATE triggers have no transition table to look at.)
        IF TG_OP <> 'TRUNCATE' THEN
            IF NOT EXISTS (SELECT 1 FROM r2sf_changed) THEN
                RETURN NULL;
            END IF;
        END IF;
        -- The row lock first, the number second: a concurrent writer of the same table waits here
        -- until this transaction ends and then draws a larger number, so a table's versions follow
        -- commit order and a notification is never older than one already sent.
        INSERT INTO r2sf.data_versions (relid, version, changed_at) VALUES (TG_RELID, 0, now())
        ON CONFLICT (relid) DO NOTHING;
        PERFORM 1 FROM r2sf.data_versions WHERE relid = TG_RELID FOR UPDATE;
        v := nextval('r2sf.data_version_seq');
        UPDATE r2sf.data_versions SET version = v, changed_at = now() WHERE relid = TG_RELID;
        PERFORM pg_notify('r2sf_data_version', TG_RELID::text || ':' || v::text);
        RETURN NULL;
    END $$;
    """,
    # 4: the change log and the delta-token key (odata/changes.py); idempotent like 3.
    """
    CREATE TABLE IF NOT EXISTS r2sf.changes (
        relid oid NOT NULL,
        xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        key jsonb,  -- the row's key values as a JSON array; NULL marks a TRUNCATE
        changed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS changes_relid_xid ON r2sf.changes (relid, xid);
    -- Rows arrive in time order: a BRIN index finds the expired ones at almost no write cost.
    CREATE INDEX IF NOT EXISTS changes_changed_at ON r2sf.changes USING brin (changed_at);
    CREATE TABLE IF NOT EXISTS r2sf.secrets (name text PRIMARY KEY, value bytea NOT NULL);
    CREATE OR REPLACE FUNCTION r2sf.log_changes() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        keys text;
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            INSERT INTO r2sf.changes (relid, key) VALUES (TG_RELID, NULL);
            RETURN NULL;
        END IF;
        -- TG_ARGV: the key columns, already quoted, in key order.
        keys := 'jsonb_build_array(' || array_to_string(TG_ARGV, ', ') || ')';
        -- A statement touches each key once, so inserts and deletes need no DISTINCT; a delta
        -- read folds repeated keys anyway.
        IF TG_OP = 'INSERT' THEN
            EXECUTE 'INSERT INTO r2sf.changes (relid, key) SELECT $1, ' || keys
                 || ' FROM r2sf_new' USING TG_RELID;
        ELSIF TG_OP = 'DELETE' THEN
            EXECUTE 'INSERT INTO r2sf.changes (relid, key) SELECT $1, ' || keys
                 || ' FROM r2sf_old' USING TG_RELID;
        ELSE  -- an UPDATE may change the key: the old key is gone, the new one changed
            EXECUTE 'INSERT INTO r2sf.changes (relid, key) SELECT $1, k FROM (SELECT ' || keys
                 || ' AS k FROM r2sf_new UNION SELECT ' || keys || ' AS k FROM r2sf_old) c'
                 USING TG_RELID;
        END IF;
        RETURN NULL;
    END $$;
    """,
    # 5: the configuration kept in the database (sync/stored_config.py), every version of it,
    # and what admins did in the console besides saving (runs, dry runs); idempotent like 3.
    """
    CREATE TABLE IF NOT EXISTS r2sf.config_versions (
        id bigserial PRIMARY KEY,
        saved_at timestamptz NOT NULL DEFAULT now(),
        saved_by text NOT NULL,
        action text NOT NULL,
        document text NOT NULL,  -- TOML: [sync] and the exposure keys of [odata]
        diff text NOT NULL
    );
    CREATE TABLE IF NOT EXISTS r2sf.admin_audit (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        who text NOT NULL,
        action text NOT NULL,
        subject text NOT NULL DEFAULT '',
        state text NOT NULL DEFAULT 'done',
        detail jsonb NOT NULL DEFAULT '{}'
    );
    """,
    # 6: fingerprint summaries a job keeps of its target between runs (sync/fingerprint.py).
    # UNLOGGED: no WAL for what is only a shortcut; a crash empties them and the next run
    # summarises the target again. Idempotent like 3 to 5.
    """
    CREATE UNLOGGED TABLE IF NOT EXISTS r2sf.fp_state (
        job text PRIMARY KEY,
        relid oid NOT NULL,
        filenode oid NOT NULL,
        layout text NOT NULL,
        data_version bigint NOT NULL,
        verified_at timestamptz NOT NULL
    );
    CREATE UNLOGGED TABLE IF NOT EXISTS r2sf.fp_summaries (
        job text NOT NULL REFERENCES r2sf.fp_state ON DELETE CASCADE,
        b bigint NOT NULL,
        n bigint NOT NULL,
        s1 numeric NOT NULL,
        s2 numeric NOT NULL,
        PRIMARY KEY (job, b)
    );
    """,
    # 7: a kept summary as one row of arrays per job: writing 156k rows of 6 (one foreign-key
    # check each) cost seconds, aggregating them into arrays a tenth of that. Idempotent.
    # r2sf.fp_summaries stays for runs of the previous release still in flight (their state
    # rows no longer match this release's layout, so nothing reads what they keep there).
    """
    DELETE FROM r2sf.fp_state;  -- their summaries are in the old table
    CREATE UNLOGGED TABLE IF NOT EXISTS r2sf.fp_kept (
        job text PRIMARY KEY REFERENCES r2sf.fp_state ON DELETE CASCADE,
        b bigint[] NOT NULL,
        n bigint[] NOT NULL,
        s1 numeric[] NOT NULL
    );
    -- Stored uncompressed: compressing 156k buckets took 4 times as long as writing them.
    ALTER TABLE r2sf.fp_kept ALTER COLUMN b SET STORAGE EXTERNAL,
        ALTER COLUMN n SET STORAGE EXTERNAL, ALTER COLUMN s1 SET STORAGE EXTERNAL;
    """,
]


LATEST = len(MIGRATIONS)


async def schema_version(conn: Any) -> int:
    """The version of the r2sf schema (0: none); needs no privilege beyond reading it."""
    if await conn.fetchval("SELECT to_regclass('r2sf.schema_version') IS NULL"):
        return 0
    version: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM r2sf.schema_version")
    return version


async def migrate(conn: Any) -> int:
    """Bring schema `r2sf` to the latest version; returns that version.

    An up-to-date schema is left alone without taking a lock or creating anything, so a role that
    may not create schemas can still start against a database migrated by its owner.
    """
    if await schema_version(conn) >= LATEST:
        return LATEST
    async with conn.transaction():
        # Two processes starting at once must not both create the schema.
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, MIGRATION_LOCK)
        await conn.execute("CREATE SCHEMA IF NOT EXISTS r2sf")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS r2sf.schema_version ("
            " version int NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM r2sf.schema_version")
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version > current:
                await conn.execute(sql)
                await conn.execute("INSERT INTO r2sf.schema_version (version) VALUES ($1)", version)
        return LATEST
