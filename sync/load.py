"""Load: COPY extracted rows into a temporary staging table, check them, merge what changed.

Staging has the source's own exact types, so source COPY bytes are piped in unchanged; values
are checked against the target's catalogue in SQL and converted while merging. The merge
inserts new keys, updates only rows whose values differ (`IS DISTINCT FROM`) and deletes or
flags missing ones; a first load into an empty target of the same types skips staging. It must
never TRUNCATE, DROP, RENAME or delete-and-reinsert a target that anyone else can see (a table
the run's own transaction created is emptied once, for COPY FREEZE), and the caller runs
`merge` inside one transaction so readers see the old rows or the new ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from odata.ident import ident
from sync import heroku_connect as hc
from sync.config import HEROKU_CONNECT_SYSTEM_COLUMNS, Job
from sync.errors import SourceError, TargetError, TooManyChanges, TooManyDeletes, ValueDoesNotFit
from sync.source import Source, SourceColumn

STAGING = "r2sf_staging"
SKIPPED = "r2sf_skipped"
# The staged rows (by ctid) a count of a fingerprint comparison's rows found new or changed:
# when there are at most CHANGES_MAX of them among few staged rows, the merge's UPDATE and
# INSERT read only those (a TID scan of an array of them, 6 bytes each), not every staged row.
CHANGES = "r2sf_changes"
CHANGES_MAX = 100_000
SAMPLE = 5
ORDERED = 0.9  # a key's correlation with the target's physical order above which it is ordered
NESTED_SHARE = 10  # staged rows below 1/10 of the source's: joined by key lookups

# Types without an equality operator: compared as text.
_NO_EQUALITY = frozenset({114, 142, 600, 601, 602, 603, 604, 628, 718})
_INT_RANGE = {
    21: (-32768, 32767),
    23: (-2147483648, 2147483647),
    20: (-9223372036854775808, 9223372036854775807),
}
_NUMBERS = frozenset({20, 21, 23, 700, 701, 1700})
_TEXTS = frozenset({25, 1043, 1042, 19})
# (staging type, target type) pairs whose conversion cannot fail.
_SAFE = frozenset(
    {
        (21, 23), (21, 20), (23, 20), (21, 1700), (23, 1700), (20, 1700),
        (21, 701), (23, 701), (700, 701), (21, 700),
        (1082, 1114), (1082, 1184), (1114, 1184), (1184, 1114),
    }
)  # fmt: skip

Progress = Callable[[int, int], None]  # (rows so far or -1, bytes so far)


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type_oid: int
    typmod: int
    type_sql: str  # format_type(): the exact type, with length/precision
    not_null: bool

    @property
    def max_length(self) -> int | None:
        if self.type_oid in (1043, 1042) and self.typmod > 4:
            return self.typmod - 4
        return None

    @property
    def precision(self) -> tuple[int, int] | None:
        if self.type_oid == 1700 and self.typmod > 4:
            mod = self.typmod - 4
            return (mod >> 16) & 0xFFFF, mod & 0xFFFF
        return None


@dataclass
class Target:
    schema: str
    table: str
    columns: dict[str, TargetColumn]
    unique_indexes: list[tuple[str, set[str]]]  # (index name, columns)

    @property
    def unique_keys(self) -> list[set[str]]:
        return [cols for _, cols in self.unique_indexes]

    @property
    def sql(self) -> str:
        return f"{ident(self.schema)}.{ident(self.table)}"

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Pair:
    """One source column and the target column it is written to."""

    source: str
    staging_oid: int
    staging_type: str
    target: TargetColumn
    staging_typmod: int = -1
    salesforce: bool = False  # a Heroku Connect column: compared and written as Salesforce stores
    scale: int | None = None  # the field's decimal places when the column's type does not say

    @property
    def same_type(self) -> bool:
        return (self.staging_oid, self.staging_typmod) == (self.target.type_oid, self.target.typmod)

    @property
    def needs_cast(self) -> bool:
        return not self.same_type

    def value(self, alias: str = "s") -> str:
        """The staged value as the target's type."""
        ref = f"{alias}.{ident(self.source)}"
        return f"CAST({ref} AS {self.target.type_sql})" if self.needs_cast else ref

    def stored(self, alias: str = "s") -> str:
        """The staged value as the target keeps it (as Salesforce stores it, for Heroku Connect)."""
        return self._normal(self.value(alias))

    def stored_target(self, alias: str = "t") -> str:
        """The target's current value, normalised the same way for comparison."""
        return self._normal(f"{alias}.{ident(self.target.name)}")

    def _normal(self, expr: str) -> str:
        if not self.salesforce:
            return expr
        t = self.target
        return hc.stored_value(expr, t.type_oid, t.type_sql, self.scale)


@dataclass
class Plan:
    job: Job
    target: Target
    pairs: list[Pair]
    keys: list[Pair]
    soft_column: str | None
    has_skipped: bool = False  # rows dropped by --on-error skip live in SKIPPED
    # SQL on target alias `t`: the target rows this run compares (the buckets a fingerprint
    # comparison found different; staging then holds only their source rows). None: all.
    restrict: str | None = None
    # The merge's UPDATE and INSERT read only the staged rows listed in CHANGES (set by the
    # count when staging holds few rows of some buckets, and few of them are to be written).
    changes_only: bool = False

    @property
    def external_id(self) -> str | None:
        """The Heroku Connect external ID column: rows are then limited to the owned ones."""
        return self.keys[0].target.name if self.job.heroku_connect is not None else None

    def owned(self, alias: str = "t") -> str:
        """SQL: target row `alias` may be updated or deleted by this job."""
        return "true" if self.external_id is None else hc.owned(alias, self.external_id)

    @property
    def values(self) -> list[Pair]:
        return [p for p in self.pairs if p not in self.keys]

    def key_join(self, t: str = "t", s: str = "s") -> str:
        return " AND ".join(f"{t}.{ident(k.target.name)} = {k.value(s)}" for k in self.keys)

    def key_text(self, alias: str) -> str:
        """Key columns as one readable string for messages: `catid=12`."""
        parts = [
            f"'{k.source}=' || coalesce({alias}.{ident(k.source)}::text, 'NULL')" for k in self.keys
        ]
        return " || ', ' || ".join(parts)

    def target_key_text(self, alias: str) -> str:
        parts = [
            f"'{k.source}=' || coalesce({alias}.{ident(k.target.name)}::text, 'NULL')"
            for k in self.keys
        ]
        return " || ', ' || ".join(parts)


@dataclass
class Counts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    not_owned: int = 0  # warehouse rows whose external ID belongs to a row the job does not own
    source_rows: int = 0
    target_rows: int = 0
    # Target rows in the buckets a fingerprint comparison staged (`Plan.restrict`), and the
    # source rows it staged.
    restricted_target_rows: int = 0
    staged_rows: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)
    skipped_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "read", "inserted", "updated", "unchanged", "deleted", "skipped",
                "not_owned", "source_rows", "target_rows",
            )
        }  # fmt: skip


# ---------------------------------------------------------------------------- catalogue


async def read_target(conn: Any, schema: str, table: str) -> Target | None:
    oid = await conn.fetchval(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
        schema,
        table,
    )
    if oid is None:
        return None
    rows = await conn.fetch(
        "SELECT attname, atttypid::int AS typ, atttypmod, format_type(atttypid, atttypmod) AS sql,"
        " attnotnull FROM pg_attribute"
        " WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''"
        " ORDER BY attnum",
        oid,
    )
    cols = {
        r["attname"]: TargetColumn(
            r["attname"], r["typ"], r["atttypmod"], r["sql"], r["attnotnull"]
        )
        for r in rows
    }
    keys = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, array(SELECT a.attname FROM unnest(i.indkey) k"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k) AS cols"
        " FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL"
        " AND i.indexprs IS NULL",
        oid,
    )
    indexes = [(r["name"].rpartition(".")[2].strip('"'), set(r["cols"])) for r in keys]
    return Target(schema, table, cols, indexes)


async def staging_types(conn: Any, columns: Sequence[SourceColumn]) -> dict[str, str]:
    """Column name -> the source's exact type (`numeric(8,2)`, `character varying(10)`).

    A type the target does not have becomes text (only built-in OIDs reach here).
    """
    rows = await conn.fetch(
        "SELECT c.name, coalesce(format_type(t.oid, c.typmod), 'text') AS sql"
        " FROM unnest($1::text[], $2::oid[], $3::int[]) AS c(name, oid, typmod)"
        " LEFT JOIN pg_type t ON t.oid = c.oid",
        [c.name for c in columns],
        [c.type_oid for c in columns],
        [c.typmod for c in columns],
    )
    return {r["name"]: r["sql"] for r in rows}


def _map_source_column(job: Job, name: str, target: Target | None) -> str:
    explicit = job.target_column(name)
    if target is None or explicit in target.columns or explicit != name:
        return explicit
    lower = {c.lower(): c for c in target.columns}
    for candidate in (name.lower(), name.lower() + "__c"):
        if candidate in lower and (job.heroku_connect or candidate == name.lower()):
            return lower[candidate]
    return name


def plan(job: Job, columns: Sequence[SourceColumn], types: dict[str, str], target: Target) -> Plan:
    """Match source columns to target columns and check the target can take the rows."""
    is_hc = job.heroku_connect is not None
    pairs: list[Pair] = []
    missing: list[str] = []
    for col in columns:
        dst = _map_source_column(job, col.name, target)
        tcol = target.columns.get(dst)
        if tcol is None:
            missing.append(col.name if dst == col.name else f"{col.name} (as {dst})")
            continue
        if is_hc and dst in HEROKU_CONNECT_SYSTEM_COLUMNS:
            raise TargetError(
                job.name,
                f"source column '{col.name}' maps to Heroku Connect system column '{dst}',"
                " which the sync never writes; drop it from the query or rename it",
            )
        scale = job.heroku_connect.scale.get(dst) if job.heroku_connect else None
        pairs.append(Pair(col.name, col.type_oid, types[col.name], tcol, col.typmod, is_hc, scale))
    if missing:
        raise TargetError(
            job.name,
            f"{target.name} has no column for source column(s) {', '.join(missing)}; add them to"
            ' the target, drop them from the query, or map them with columns = {src = "dst"}',
        )
    by_source = {p.source: p for p in pairs}
    absent = [k for k in job.key if k not in by_source]
    if absent:
        raise TargetError(
            job.name,
            f"key column(s) {', '.join(absent)} are not in the source query; select them",
        )
    keys = [by_source[k] for k in job.key]
    key_set = {k.target.name for k in keys}
    if job.heroku_connect is not None:
        _check_heroku_connect(job, target, pairs, keys[0])
    elif key_set not in target.unique_keys:
        cols = ", ".join(ident(k) for k in sorted(key_set))
        raise TargetError(
            job.name,
            f"{target.name} has no primary key or unique index on ({', '.join(sorted(key_set))});"
            f" add one: CREATE UNIQUE INDEX ON {target.sql} ({cols})",
        )
    if job.incremental is not None and job.incremental.column not in by_source:
        raise TargetError(
            job.name, f"incremental column '{job.incremental.column}' is not in the source query"
        )
    soft = job.soft_delete_column if job.deletes == "soft" else None
    if soft is not None and soft not in target.columns:
        raise TargetError(
            job.name,
            f"{target.name} has no soft-delete column '{soft}'; ALTER TABLE {target.sql}"
            f" ADD COLUMN {ident(soft)} boolean NOT NULL DEFAULT false",
        )
    return Plan(job, target, pairs, keys, soft)


def _check_heroku_connect(job: Job, target: Target, pairs: list[Pair], key: Pair) -> None:
    assert job.heroku_connect is not None
    problem = hc.unique_identifier_problem(target.table, key.target.name, target.unique_indexes)
    if problem:
        raise TargetError(job.name, f"upserts could create duplicates in Salesforce: {problem}")
    written = {p.target.name: p for p in pairs}
    for column in job.heroku_connect.scale:
        pair = written.get(column)
        if pair is None or pair.target.type_oid not in (700, 701, 1700):
            what = "a number column the job writes" if pair is None else pair.target.type_sql
            raise TargetError(
                job.name,
                f"heroku_connect.scale names '{column}', but {target.name}.{column} is not"
                f" {what}; list only the job's double precision or numeric columns",
            )


async def create_target(
    conn: Any, job: Job, columns: Sequence[SourceColumn], types: dict[str, str]
) -> None:
    """Create a missing (non-Heroku Connect) target keyed on the job's key, with the source's
    exact types (lengths, precision and scale feed the OData `$metadata` facets) and NOT NULL
    where the source table declares it."""
    defs = []
    for col in columns:
        dst = job.target_column(col.name)
        not_null = " NOT NULL" if col.not_null or col.name in job.key else ""
        defs.append(f"{ident(dst)} {types[col.name]}{not_null}")
    if job.deletes == "soft" and job.soft_delete_column:
        defs.append(f"{ident(job.soft_delete_column)} boolean NOT NULL DEFAULT false")
    keys = ", ".join(ident(job.target_column(k)) for k in job.key)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(job.target_schema)}")
    await conn.execute(
        f"CREATE TABLE {ident(job.target_schema)}.{ident(job.target_table)}"
        f" ({', '.join(defs)}, PRIMARY KEY ({keys}))"
    )


# ---------------------------------------------------------------------------- staging


async def stage(
    conn: Any,
    source: Source,
    types: dict[str, str],
    key_columns: Sequence[str],
    progress: Progress | None = None,
) -> int:
    """Create the staging table and stream every source batch into it; returns rows staged."""
    await create_staging(conn, source.columns, types)
    names = [c.name for c in source.columns]

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in source.batches():
            if progress:
                progress(source.rows, source.nbytes)
            yield chunk

    status = await conn.copy_to_table(STAGING, source=chunks(), columns=names, format=source.format)
    staged = int(status.split()[-1])
    # Temp tables are never auto-analyzed; the merge's joins need estimates for the key columns
    # (the others are only compared, so their statistics would not change any plan).
    await conn.execute(f"ANALYZE {STAGING} ({', '.join(ident(k) for k in key_columns)})")
    return staged


async def create_staging(conn: Any, columns: Sequence[SourceColumn], types: dict[str, str]) -> None:
    """An empty staging table with the source's own types."""
    defs = ", ".join(f"{ident(c.name)} {types[c.name]}" for c in columns)
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{STAGING}")
    await conn.execute(f"CREATE TEMP TABLE {STAGING} ({defs})")


# ---------------------------------------------------------------------------- direct load

# A row the target rejects during a direct load: the run falls back to staging, which names it.
DIRECT_LOAD_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


async def can_load_directly(conn: Any, p: Plan, source: Source, created: bool) -> bool:
    """Whether the source can be copied straight into the target (a first load).

    Only into an empty target whose columns have the source's own types, so COPY's input
    functions convert and check exactly as the staging path's casts would (a value that does
    not fit fails the COPY, and the caller falls back to staging to report it).
    """
    if p.soft_column is not None or p.external_id is not None or p.job.change_budget is not None:
        return False  # staged, so ownership and the change budget apply before anything is written
    if any(pr.staging_oid != pr.target.type_oid for pr in p.pairs):
        return False
    if created:
        return True
    exists = f"SELECT EXISTS (SELECT 1 FROM {p.target.sql})"
    if await conn.fetchval(exists):
        return False  # the usual rerun: no lock taken
    # Writers wait (readers do not) so the target stays empty until this run commits.
    await conn.execute(f"LOCK TABLE {p.target.sql} IN SHARE ROW EXCLUSIVE MODE")
    return not await conn.fetchval(exists)


async def copy_into_target(
    conn: Any, source: Source, p: Plan, progress: Progress | None = None, created: bool = False
) -> int:
    """COPY every source row into the (empty) target; returns the rows copied.

    Into a table this transaction `created`, the rows go in frozen (COPY FREEZE): already
    visible to all, with the visibility map set, so the first scan of the table (the next
    run's fingerprint summary, the OData service's first reads) does not set a hint bit on, and
    so write, every page again, nor does a later anti-wraparound vacuum. FREEZE wants the table
    created or emptied in the current subtransaction: the caller's savepoint is not the one
    that created it, so the (empty) table is truncated in it first. No one else can see the
    table before the run commits.
    """
    by_source = {pr.source: pr for pr in p.pairs}
    columns = [by_source[c.name].target.name for c in source.columns]
    if created:
        await conn.execute(f"TRUNCATE {p.target.sql}")
    status = await conn.copy_to_table(
        p.target.table,
        schema_name=p.target.schema,
        source=_chunks(source, progress),
        columns=columns,
        format=source.format,
        freeze=created,
    )
    # Statistics now rather than at autovacuum's next pass: the next run's merge plan (see
    # `_key_ordered`) and the OData service's first queries plan against the rows just loaded.
    await conn.execute(f"ANALYZE {p.target.sql}")
    return int(status.split()[-1])


async def _chunks(source: Source, progress: Progress | None) -> AsyncIterator[bytes]:
    async for chunk in source.batches():
        if progress:
            progress(source.rows, source.nbytes)
        yield chunk


# ---------------------------------------------------------------------------- checks


def _fits_sql(pg16: bool, value: str, type_sql: str) -> str:
    literal = "'" + type_sql.replace("'", "''") + "'"
    if pg16:
        return f"pg_input_is_valid({value}, {literal})"
    return f"pg_temp.r2sf_fits({value}, {literal})"


FITS_FUNCTION = """
CREATE OR REPLACE FUNCTION pg_temp.r2sf_fits(v text, typ text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT CAST(%L AS %s)', v, typ);
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$
"""


def _may_overflow_int(src: int, dst: int) -> bool:
    if dst not in _INT_RANGE or src not in _NUMBERS:
        return False
    return src not in _INT_RANGE or _INT_RANGE[src][1] > _INT_RANGE[dst][1]


def _violation(pair: Pair, pg16: bool) -> tuple[str, str] | None:
    """SQL that is true when the staged value cannot be written, and the limit it breaks."""
    if pair.same_type:
        return None  # staged by the same input function, with the same limits
    col = f"s.{ident(pair.source)}"
    t = pair.target
    src = pair.staging_oid
    as_text = f"CAST({col} AS text)"
    if src in _TEXTS and t.type_oid not in _TEXTS and t.type_oid != 25:
        return f"NOT {_fits_sql(pg16, as_text, t.type_sql)}", f"a valid {t.type_sql}"
    if t.max_length is not None:
        # PostgreSQL's own rule: a longer value fits when what is beyond the limit is spaces
        # (they are cut; a fingerprint of such a value equals the stored one's).
        return (
            f"char_length(rtrim({as_text}, ' ')) > {t.max_length}",
            f"{t.max_length} characters",
        )
    if _may_overflow_int(src, t.type_oid):
        lo, hi = _INT_RANGE[t.type_oid]
        return (
            f"CAST({col} AS numeric) NOT BETWEEN {lo} AND {hi}",
            f"{t.type_sql} range {lo}..{hi}",
        )
    if t.precision is not None and src in _NUMBERS:
        p, scale = t.precision
        return (
            f"abs(round(CAST({col} AS numeric), {scale})) >= 10::numeric ^ {p - scale}",
            f"{t.type_sql}: at most {p - scale} digits before the decimal point",
        )
    if src == t.type_oid or t.type_oid == 25 or (src, t.type_oid) in _SAFE:
        return None
    return f"NOT {_fits_sql(pg16, as_text, t.type_sql)}", f"a valid {t.type_sql}"


async def check_values(conn: Any, p: Plan, on_error: str, counts: Counts) -> None:
    """Fail (or with on_error="skip", drop and report) staged rows the target cannot take."""
    job = p.job.name
    keys = ", ".join(ident(k.source) for k in p.keys)
    # A unique index is the cheapest duplicate check (a sort, faster than hashing every key).
    try:
        await conn.execute(f"CREATE UNIQUE INDEX ON {STAGING} ({keys})")
    except asyncpg.UniqueViolationError as exc:
        detail = (exc.detail or "").removesuffix(".")
        raise SourceError(
            job,
            f"the source returns a key more than once ({detail}); the key must be unique"
            " (fix the query, or choose key columns that identify one row)",
        ) from None
    pg16 = int(await conn.fetchval("SHOW server_version_num")) >= 160000
    if not pg16:
        await conn.execute(FITS_FUNCTION)
    checks: list[tuple[Pair, str, str]] = []
    for pair in p.pairs:
        bad = _violation(pair, pg16)
        if bad is not None:
            checks.append((pair, f"coalesce({bad[0]}, false)", bad[1]))
        if pair.target.not_null or pair in p.keys:
            checks.append((pair, f"s.{ident(pair.source)} IS NULL", "not null"))
    if not checks:
        return
    where = " OR ".join(f"({c})" for _, c, _ in checks)
    flags = ", ".join(f"({c}) AS f{i}" for i, (_, c, _) in enumerate(checks))
    rows = await conn.fetch(
        f"SELECT {p.key_text('s')} AS k, {flags}, "
        + ", ".join(f"s.{ident(pr.source)}::text AS v{i}" for i, (pr, _, _) in enumerate(checks))
        + f" FROM {STAGING} s WHERE {where} LIMIT {SAMPLE}"
    )
    if not rows:
        return
    reasons = []
    for r in rows:
        for i, (pr, _, limit) in enumerate(checks):
            if r[f"f{i}"]:
                value = "NULL" if r[f"v{i}"] is None else repr(_clip(r[f"v{i}"]))
                reasons.append(
                    f"key {r['k']}: column {pr.source} -> {p.target.name}.{pr.target.name}"
                    f" ({pr.target.type_sql}): value {value} does not fit (limit: {limit})"
                )
                break
    if on_error != "skip":
        total = await conn.fetchval(f"SELECT count(*) FROM {STAGING} s WHERE {where}")
        more = f" ({total} rows in all do not fit" + (
            "; rerun with --on-error skip to skip them)" if total else ")"
        )
        raise ValueDoesNotFit(job, reasons[0] + more + "; nothing was written")
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{SKIPPED}")
    kept = keys
    inc = p.job.incremental
    if inc is not None and inc.column not in {k.source for k in p.keys}:
        kept += f", {ident(inc.column)}"  # the watermark must not pass a skipped row
    await conn.execute(f"CREATE TEMP TABLE {SKIPPED} AS SELECT {kept} FROM {STAGING} WITH NO DATA")
    status = await conn.execute(
        f"WITH bad AS (DELETE FROM {STAGING} s WHERE {where} RETURNING {kept})"
        f" INSERT INTO {SKIPPED} SELECT * FROM bad"
    )
    counts.skipped = int(status.split()[-1])
    counts.skipped_reasons = reasons
    p.has_skipped = True


def _clip(v: str, n: int = 60) -> str:
    return v if len(v) <= n else v[:n] + "..."


# ---------------------------------------------------------------------------- merge


def _sides(pr: Pair) -> tuple[str, str]:
    """(target value, staged value) as compared: as stored, and as text without an `=`."""
    t, s = pr.stored_target("t"), pr.stored("s")
    if pr.target.type_oid in _NO_EQUALITY:
        return f"({t})::text", f"({s})::text"
    return t, s


def _distinct(p: Plan) -> str:
    sides = [_sides(pr) for pr in p.values]
    if p.soft_column:
        sides.append((f"t.{ident(p.soft_column)}", "false"))
    left = ", ".join(a for a, _ in sides)
    right = ", ".join(b for _, b in sides)
    return f"ROW({left}) IS DISTINCT FROM ROW({right})"


def _not_skipped(p: Plan) -> str:
    if not p.has_skipped:
        return "true"
    join = " AND ".join(f"t.{ident(k.target.name)} = {k.value('k')}" for k in p.keys)
    return f"NOT EXISTS (SELECT 1 FROM {SKIPPED} k WHERE {join})"


def _missing(p: Plan) -> str:
    """Target rows the job owns whose key the source no longer returns (nor skipped)."""
    cond = f"NOT EXISTS (SELECT 1 FROM {STAGING} s WHERE {p.key_join()})"
    cond += f" AND {_not_skipped(p)} AND {p.owned('t')}"
    if p.restrict is not None:
        cond += f" AND {p.restrict}"
    if p.soft_column:
        cond += f" AND t.{ident(p.soft_column)} IS DISTINCT FROM true"
    return cond


def _new_rows(p: Plan) -> str:
    return f"NOT EXISTS (SELECT 1 FROM {p.target.sql} t WHERE {p.key_join()})"


async def _key_ordered(conn: Any, p: Plan) -> bool:
    """Whether the target's rows lie in the order of its (one-column) key.

    Then walking the target's key index and staging's (`check_values` builds it) side by side
    (a merge join) compares the two without building a hash table of either: about half the
    time of a hash join for a table loaded in key order, which is how a table r2sf filled from
    an ordered source lies. Judged from the target's statistics; none, or a table whose updates
    have scattered its rows, keeps the planner's own choice.
    """
    if len(p.keys) != 1 or p.external_id is not None or p.has_skipped:
        return False  # other joins (ownership, skipped rows) keep the planner's own choice
    correlation = await conn.fetchval(
        "SELECT correlation FROM pg_stats WHERE schemaname = $1 AND tablename = $2"
        " AND attname = $3",
        p.target.schema,
        p.target.table,
        p.keys[0].target.name,
    )
    return correlation is not None and abs(correlation) >= ORDERED


async def count_changes(conn: Any, p: Plan, deletes: bool, counts: Counts, samples: bool) -> int:
    """Count (and sample) what a merge would do, in one join; returns the number of deletes.

    The merge then runs only the statements that have something to write, so an unchanged
    rerun joins staging and target once instead of once per statement. For a Heroku Connect
    job, `target_rows` counts the rows it owns, and rows it does not own are never updated or
    deleted (`not_owned` counts warehouse rows whose external ID such a row holds).
    """
    if p.restrict is not None:
        return await _count_restricted(conn, p, deletes, counts, samples)
    if await _key_ordered(conn, p):
        # Only the plan changes, never a result; for this and the merge's statements.
        await conn.execute("SET LOCAL enable_hashjoin = off")
    t = p.target.sql
    owned = p.owned("t")
    changed = _distinct(p) if (p.values or p.soft_column) else "false"
    gone = "false"
    if deletes:
        gone = f"s.ctid IS NULL AND {_not_skipped(p)} AND {owned}"
        if p.soft_column:
            gone += f" AND t.{ident(p.soft_column)} IS DISTINCT FROM true"
    both = "t.ctid IS NOT NULL AND s.ctid IS NOT NULL"
    row = await conn.fetchrow(
        f"SELECT count(t.ctid) FILTER (WHERE {owned}) AS target_rows,"
        " count(*) FILTER (WHERE t.ctid IS NULL) AS inserts,"
        f" count(*) FILTER (WHERE {both} AND {owned} AND {changed}) AS updates,"
        f" count(*) FILTER (WHERE {both} AND NOT {owned}) AS not_owned,"
        f" count(*) FILTER (WHERE {gone}) AS deletes"
        f" FROM {t} t FULL JOIN {STAGING} s ON {p.key_join()}"
    )
    counts.target_rows = row["target_rows"]
    counts.inserted = row["inserts"]
    counts.updated = row["updates"]
    counts.not_owned = row["not_owned"]
    n_deletes: int = row["deletes"]
    counts.deleted = n_deletes
    counts.unchanged = (
        counts.read - counts.skipped - counts.inserted - counts.updated - counts.not_owned
    )
    joined = f"FROM {t} t JOIN {STAGING} s ON {p.key_join()}"
    if counts.not_owned:
        counts.samples["not_owned"] = await _sample(
            conn, f"SELECT {p.key_text('s')} {joined} WHERE NOT {owned}"
        )
    if samples:
        await _sample_changes(conn, p, counts, deletes)
    return n_deletes


async def _count_restricted(
    conn: Any, p: Plan, deletes: bool, counts: Counts, samples: bool
) -> int:
    """`count_changes` when staging holds only the rows of some buckets (`p.restrict`).

    Inserts and updates join the staged rows to the target by key; deletes are looked for
    only among the target rows of those buckets, and only when some of them matched no
    staged row. `counts.target_rows` is already set (from the target's summary).
    """
    t = p.target.sql
    few = bool(counts.read and counts.staged_rows * NESTED_SHARE < counts.read)
    if few:
        # Few staged rows: look each up in the target's key index (here and in the merge's
        # statements) rather than hash or walk the whole target.
        await conn.execute("SET LOCAL enable_hashjoin = off")
        await conn.execute("SET LOCAL enable_mergejoin = off")
    changed = _distinct(p) if (p.values or p.soft_column) else "false"
    # The rows to write are kept as they are found, so that the merge need not look every
    # staged row up again: of 160k staged rows (5,000 differing buckets of 32), 5,000 changed;
    # a lookup costs ~2.7 us.
    await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{CHANGES}")
    await conn.execute(
        f"CREATE TEMP TABLE {CHANGES} ON COMMIT DROP AS"
        " SELECT s.ctid AS at, t.ctid IS NULL AS new"
        f" FROM {STAGING} s LEFT JOIN {t} t ON {p.key_join()}"
        f" WHERE t.ctid IS NULL OR {changed}"
    )
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE new) AS inserts, count(*) FILTER (WHERE NOT new) AS updates,"
        f" (SELECT count(*) FROM {STAGING}) - count(*) FILTER (WHERE new) AS matched"
        f" FROM {CHANGES}"
    )
    counts.inserted = row["inserts"]
    counts.updated = row["updates"]
    # Many staged rows keep hash joins, under which a join of staging to CHANGES could be
    # planned badly; many changes would make a long array: the merge then reads all of staging.
    p.changes_only = few and counts.inserted + counts.updated <= CHANGES_MAX
    counts.not_owned = 0
    n_deletes = 0
    if deletes and counts.restricted_target_rows > row["matched"]:
        n_deletes = await conn.fetchval(f"SELECT count(*) FROM {t} t WHERE {_missing(p)}")
    counts.deleted = n_deletes
    counts.unchanged = counts.read - counts.skipped - counts.inserted - counts.updated
    if samples:
        await _sample_changes(conn, p, counts, n_deletes > 0)
    return n_deletes


async def _sample_changes(conn: Any, p: Plan, counts: Counts, deletes: bool) -> None:
    """Up to SAMPLE keys of each kind of change, for a dry run's report."""
    t = p.target.sql
    joined = f"FROM {t} t JOIN {STAGING} s ON {p.key_join()}"
    counts.samples["insert"] = await _sample(
        conn, f"SELECT {p.key_text('s')} FROM {STAGING} s WHERE {_new_rows(p)}"
    )
    counts.samples["update"] = await _sample(
        conn,
        f"SELECT {p.key_text('s')} {joined} WHERE {p.owned('t')} AND {_distinct(p)}"
        if (p.values or p.soft_column)
        else "",
    )
    counts.samples["delete"] = await _sample(
        conn, f"SELECT {p.target_key_text('t')} FROM {t} t WHERE {_missing(p)}" if deletes else ""
    )


async def _sample(conn: Any, sql: str) -> list[str]:
    if not sql:
        return []
    return [r[0] for r in await conn.fetch(sql + f" LIMIT {SAMPLE}")]


def guard_deletes(p: Plan, n_deletes: int, target_rows: int) -> None:
    limit = p.job.max_deletes.limit(target_rows)
    if n_deletes > limit:
        raise TooManyDeletes(
            p.job.name,
            f"would delete {n_deletes} of {target_rows} rows in {p.target.name}, more than"
            f" max_deletes = {p.job.max_deletes} ({limit} rows); nothing was written. If the"
            " source really lost those rows, raise max_deletes for one run or check the source",
        )


def guard_changes(p: Plan, counts: Counts) -> None:
    """Refuse a run that would write more rows than the job's change budget (`max_changes`)."""
    budget = p.job.change_budget
    writes = counts.inserted + counts.updated + counts.deleted
    if budget is None or writes <= budget:
        return
    what = (
        f"would write {writes:,} rows to {p.target.name} ({counts.inserted:,} inserts,"
        f" {counts.updated:,} updates, {counts.deleted:,} deletes), more than"
        f" max_changes = {budget:,}; nothing was written."
    )
    if p.external_id is not None:
        what += (
            f" Heroku Connect pushes {hc.PUSH_RATE[0]}-{hc.PUSH_RATE[1]} records/s to"
            f" Salesforce, so these take {hc.push_estimate(writes)} and use as many API calls."
        )
    raise TooManyChanges(
        p.job.name,
        what + " If that is intended, rerun with --force (or raise max_changes)",
    )


async def merge(conn: Any, p: Plan, deletes: bool, n_deletes: int, counts: Counts) -> None:
    """Write the changes `count_changes` found; the caller holds the transaction.

    One statement per kind (update, insert, delete). For Heroku Connect jobs an UPDATE assigns
    a changed value only to the columns that changed (Heroku Connect pushes every column whose
    value differs), inserts and deletes keep the job's ownership in `r2sf.hc_owned`.
    """
    t = p.target.sql
    ext = p.external_id
    updates_from = inserts_from = STAGING
    if p.changes_only:
        updates_from, inserts_from = _listed(new=False), _listed(new=True)
    if counts.updated:
        sets = [_assignment(pr, ext is not None) for pr in p.values]
        if p.soft_column:
            sets.append(f"{ident(p.soft_column)} = false")
        status = await conn.execute(
            f"UPDATE {t} t SET {', '.join(sets)} FROM {updates_from} s"
            f" WHERE {p.key_join()} AND {p.owned('t')} AND {_distinct(p)}"
        )
        counts.updated = int(status.split()[-1])
    if counts.inserted:
        cols = [ident(pr.target.name) for pr in p.pairs]
        vals = [pr.stored("s") for pr in p.pairs]
        if p.soft_column:
            cols.append(ident(p.soft_column))
            vals.append("false")
        sql = (
            f"INSERT INTO {t} ({', '.join(cols)}) SELECT {', '.join(vals)} FROM {inserts_from} s"
            f" WHERE {_new_rows(p)}"
        )
        if ext is None:
            counts.inserted = int((await conn.execute(sql)).split()[-1])
        else:
            counts.inserted = await conn.fetchval(hc.record_inserts(sql, ext), *hc.owner(p.job))
    counts.deleted = 0
    if deletes and n_deletes:
        if p.soft_column:
            sql = f"UPDATE {t} t SET {ident(p.soft_column)} = true WHERE {_missing(p)}"
            counts.deleted = int((await conn.execute(sql)).split()[-1])
        elif ext is None:
            sql = f"DELETE FROM {t} t WHERE {_missing(p)}"
            counts.deleted = int((await conn.execute(sql)).split()[-1])
        else:
            sql = f"DELETE FROM {t} t WHERE {_missing(p)}"
            counts.deleted = await conn.fetchval(hc.record_deletes(sql, ext), *hc.owner(p.job))
    counts.unchanged = (
        counts.read - counts.skipped - counts.inserted - counts.updated - counts.not_owned
    )
    counts.target_rows += counts.inserted - (0 if p.soft_column else counts.deleted)


def _listed(new: bool) -> str:
    """The staged rows CHANGES lists as new (or as changed), read by ctid (a TID scan)."""
    which = "new" if new else "NOT new"
    return (
        f"(SELECT * FROM {STAGING} WHERE ctid = ANY(ARRAY(SELECT at FROM {CHANGES} WHERE {which})))"
    )


def _assignment(pr: Pair, changed_only: bool) -> str:
    col = ident(pr.target.name)
    if not changed_only:
        return f"{col} = {pr.value('s')}"
    t, s = _sides(pr)
    return f"{col} = CASE WHEN {t} IS DISTINCT FROM {s} THEN {pr.stored('s')} ELSE t.{col} END"
