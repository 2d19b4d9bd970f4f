"""Fingerprint comparison: a rerun stages only the rows of the key buckets that differ.

A rerun of a full (not incremental) job used to read, stage and join every source row. Here
both databases first summarise their rows, side by side: each row's key picks a bucket (a key
range for one integer key, else a hash of the key) and each bucket gets (rows, sum of the rows'
hashes). Only buckets whose summaries differ are read from the source in full, staged and
merged; the merge of those rows is the ordinary one (`load.merge`), and deletes look only at
target rows of those buckets.

The target's summary is computed from the target as it is, so a write made outside the sync
(OData, psql) is found and repaired exactly as a full comparison would; or, when the last run
kept one and the data-version triggers vouch that nothing else wrote since, taken from
r2sf.fp_kept (see "kept summaries" below). Two dialects, one per source kind, each
computed identically on both sides:

- `postgres` (a PostgreSQL source): `hash_record_extended` of each row's values cast as the
  merge casts them (`load.Pair.value`), the types whose own hash folds part of the value as
  their binary send form (`_pg_parts`), rehashed once before summing: rows hash alike only
  when the merge's `IS DISTINCT FROM` finds them equal (1.0 and 1.00 into a text column
  differ; NULL, '' and 0 differ; -1.5 and 1.5 differ). Types without a trustworthy hash are
  hashed as text on both sides.
- `redshift`: MD5 of the values' text forms (length-prefixed where text may hold the
  separator; NULL is `-`), so no two different rows give the same text; the target computes
  the same text from what it stores. A text form the two systems write differently (a float's
  digits) only makes a bucket differ, so it is staged and merged: slower, never wrong.

A bucket whose summary is equal on both sides is taken as unchanged: its rows hash alike, and
the 64-bit (postgres) or 60-bit (redshift) sums make a chance match about 2^-53 to 2^-60.

Deletes rely on both sides putting a key in the same bucket: key ranges shift (or divide) the
same integer, the postgres dialect's hash buckets use the same function on the same typed
values (keys of other types compare in full), the redshift dialect takes only integer or text
keys, whose text is the same in both systems; and every run checks it on the staged rows,
falling back to the full comparison if any disagrees.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from odata import versions
from odata.ident import ident
from sync.config import Job
from sync.load import NESTED_SHARE, STAGING, Pair, Plan
from sync.source import Source, SourceColumn

Dialect = Literal["postgres", "redshift"]

MIN_ROWS = 50_000  # below this a full comparison costs about as much
ROWS_PER_BUCKET = 64  # the target's rows per bucket, up to 2x this
# At most this many buckets, so each side's grouping holds them in memory (about 260 bytes a
# bucket: 68 MB, within the 64 MB work_mem times PostgreSQL 15's hash_mem_multiplier of 2); a
# bigger table gets bigger buckets.
MAX_BUCKETS = 1 << 18
# The part of the rows in differing buckets above which reading every row once costs less
# than reading the source again for them (a second scan of the query, with the summary paid).
MAX_SHARE = 0.6
# When the target's summary is the one kept by the last run, the target has nothing to
# summarise, and a PostgreSQL source's summary runs as two queries in one snapshot, each over
# half the buckets, on two server connections, parallel query off (PostgreSQL's own does not
# take this grouping well: misjudging the buckets as one per row it plans none, and misjudging
# a half's rows it sorts them in workers that spill to disk). 5M TICKIT rows, 2 cores: 1.95 and
# 2.05 s for the halves side by side, 3.2 s for the whole, 1.9 and 2.9 s for two parallel plans.
SPLIT_WHEN_KEPT = True

SOURCE_FP = "r2sf_fp_source"
TARGET_FP = "r2sf_fp_target"
CHANGED = "r2sf_fp_changed"
SRC = "r2sf_src"  # the alias extraction_sql and the queries here give the job's query

# Types whose own hash (hash_record_extended uses it) tells apart every pair of values their `=`
# does, as `_pg_parts` passes them: the types whose hash folds or ignores part of the value
# (int8 and timestamps: lo XOR hi 32 bits; numeric: not its sign, nor NaN or Infinity; floats:
# 0 hashes as NULL does) go in as their binary send form (`SEND`), all of the value, hashed as
# bytes; NULL (hashed as 0) is told from the other types' values by a mask. Every other type
# (jsonb: '1' and '[1]' hash alike; time, interval: folded) is hashed as text on both sides.
# varchar and bpchar hash as text and bpchar do.
HASHABLE = frozenset(
    {16, 17, 18, 19, 20, 21, 23, 25, 26, 650, 700, 701, 829, 869, 1042, 1043, 1082, 1114,
     1184, 1700, 2950}
)  # fmt: skip
# The send functions of the types hashed by their binary form: every bit of the value, so two
# values hash alike only when their bytes are the same (1.0 and 1.00 in an unconstrained
# numeric, or 0 and -0, differ: such a bucket is staged and merged, slower, never wrong).
SEND = {
    20: "int8send",
    700: "float4send",
    701: "float8send",
    1114: "timestamp_send",
    1184: "timestamptz_send",
    1700: "numeric_send",
}
# Length-limited types: hashed as their unlimited type, so a value too long for the target is
# never cut to equal what the target holds (the staging check must see it).
UNLIMITED = {1043: "character varying", 1042: "bpchar"}
_INTEGERS = frozenset({20, 21, 23})
# Key types whose text form PostgreSQL and Redshift write alike (integers, text).
TEXT_ALIKE = frozenset({20, 21, 23, 25, 1043})
# Redshift: each column's text, length-prefixed (a text type is used as is; CAST AS VARCHAR on
# Redshift would mean VARCHAR(256) and cut longer values).
_CHAR_TYPES = frozenset({25, 1042, 1043})
_CHAR_MAX = 4096  # Redshift's longest CHAR, in bytes
# Types whose text never holds `|` nor is `-` alone: numbers, booleans, dates and times.
_SEPARATOR_FREE = frozenset({16, 20, 21, 23, 700, 701, 1700, 1082, 1083, 1114, 1184, 1266})


@dataclass(frozen=True)
class Fingerprints:
    """What one run compares: the dialect and how keys fall into buckets: by a hash of the key
    into `buckets` (a power of two), or, for one integer key column (`shift` set), by key
    range: `key >> shift`, so rows stored in key order summarise into consecutive buckets,
    which PostgreSQL aggregates at almost the cost of reading them."""

    dialect: Dialect
    buckets: int
    plan: Plan
    columns: Sequence[SourceColumn]  # the source's columns, in plan.pairs order
    shift: int | None = None

    @property
    def description(self) -> str:
        """For the log: `key>>6` or `hash/65536`."""
        if self.shift is not None:
            key = self.plan.keys[0].source
            return (
                f"{key}>>{self.shift}" if self.dialect == "postgres" else f"{key}/{1 << self.shift}"
            )
        return f"hash/{self.buckets}"

    # ------------------------------------------------------------------ per dialect

    def _source_value(self, pr: Pair, col: SourceColumn, alias: str) -> str:
        """A source (or staged) value as the target would store it, for hashing."""
        ref = f"{alias}.{ident(pr.source)}"
        if col.cast_to_text:
            ref = f"CAST({ref} AS text)"
        t = pr.target
        if t.type_oid not in HASHABLE:
            return f"CAST({ref} AS text)"
        if pr.same_type:
            return ref
        return f"CAST({ref} AS {UNLIMITED.get(t.type_oid, t.type_sql)})"

    @staticmethod
    def _target_value(pr: Pair, alias: str) -> str:
        ref = f"{alias}.{ident(pr.target.name)}"
        return ref if pr.target.type_oid in HASHABLE else f"CAST({ref} AS text)"

    @staticmethod
    def _text_form(pr: Pair, col: SourceColumn) -> tuple[bool, bool]:
        """(length-prefixed, numeric zeros trimmed): how the Redshift dialect writes this
        column's text, the same on both sides. Text that may hold the separator `|` (or be
        `-`) is length-prefixed; into a numeric column of another scale 1.0 and 1.00 are one
        value, so trailing fractional zeros go."""
        plain = col.type_oid in _SEPARATOR_FREE and pr.target.type_oid in _SEPARATOR_FREE
        same_numeric = col.type_oid == 1700 and col.typmod == pr.target.typmod
        return not plain, pr.target.type_oid == 1700 and not same_numeric

    def _text_pg(self, ref: str, pr: Pair, col: SourceColumn) -> str:
        """PostgreSQL spelling of the Redshift dialect's per-column text."""
        prefixed, trimmed = self._text_form(pr, col)
        text = f"CAST({ref} AS text)"
        if trimmed:
            text = _numeric_text(text)
        if prefixed:
            text = f"octet_length({text})::text || ':' || {text}"
        return f"coalesce({text}, '-')"

    def _text_redshift(self, ref: str, pr: Pair, col: SourceColumn) -> str:
        if col.type_oid == 700:  # REAL: 6 + 2 digits do not tell every float4 apart; FLOAT8 does
            ref = f"CAST({ref} AS FLOAT8)"
        text = ref if col.type_oid in _CHAR_TYPES else f"CAST({ref} AS VARCHAR)"
        if col.type_oid == 1042:
            # CHAR(n)'s padding is not part of its value (PostgreSQL's text of it drops it) but
            # is of its length: as VARCHAR of its own length (nothing cut), then trimmed.
            n = col.typmod - 4 if col.typmod > 4 else _CHAR_MAX
            text = f"RTRIM(CAST({ref} AS VARCHAR({n})))"
        prefixed, trimmed = self._text_form(pr, col)
        if trimmed:
            text = _numeric_text(text)
        if prefixed:
            text = f"CAST(OCTET_LENGTH({text}) AS VARCHAR) || ':' || {text}"
        return f"COALESCE({text}, '-')"

    def _pairs(self, keys_only: bool) -> list[tuple[Pair, SourceColumn]]:
        by_name = {c.name: c for c in self.columns}
        pairs = self.plan.keys if keys_only else self.plan.pairs
        return [(pr, by_name[pr.source]) for pr in pairs]

    def _range(self, ref: str) -> str:
        """A key range's number: `key >> shift` (PostgreSQL), or the same division spelled
        for Redshift, which both systems truncate alike (toward zero) for a negative key."""
        if self.dialect == "postgres":
            return f"(CAST({ref} AS bigint) >> {self.shift})"
        return f"(CAST({ref} AS BIGINT) / CAST({1 << (self.shift or 0)} AS BIGINT))"

    def source_bucket(self, alias: str = SRC) -> str:
        """SQL (in the source's dialect) for a source row's bucket."""
        mask = self.buckets - 1
        if self.shift is not None:
            return self._range(f"{alias}.{ident(self.plan.keys[0].source)}")
        if self.dialect == "postgres":
            vals = ", ".join(self._source_value(p, c, alias) for p, c in self._pairs(True))
            return f"(hash_record_extended(ROW({vals}), 1) & {mask})"
        text = " || '|' || ".join(
            self._text_redshift(f"{alias}.{ident(p.source)}", p, c) for p, c in self._pairs(True)
        )
        return f"(STRTOL(SUBSTRING(MD5({text}), 1, 8), 16) % {self.buckets})"

    def staged_bucket(self, alias: str = "s") -> str:
        """SQL (PostgreSQL) for a staged row's bucket: must equal `source_bucket`."""
        if self.dialect == "postgres" or self.shift is not None:
            return self.source_bucket(alias)
        text = " || '|' || ".join(
            self._text_pg(f"{alias}.{ident(p.source)}", p, c) for p, c in self._pairs(True)
        )
        return f"({_hex('md5(' + text + ')', 1, 8)} % {self.buckets})"

    def target_bucket(self, alias: str = "t") -> str:
        if self.shift is not None:
            return self._range(f"{alias}.{ident(self.plan.keys[0].target.name)}")
        if self.dialect == "postgres":
            vals = ", ".join(self._target_value(p, alias) for p in self.plan.keys)
            return f"(hash_record_extended(ROW({vals}), 1) & {self.buckets - 1})"
        text = " || '|' || ".join(
            self._text_pg(f"{alias}.{ident(p.target.name)}", p, c) for p, c in self._pairs(True)
        )
        return f"({_hex('md5(' + text + ')', 1, 8)} % {self.buckets})"

    def _row_hash(self, values: list[tuple[str, Pair]], soft: str | None) -> str:
        """The 64-bit hash of one row (PostgreSQL dialect): `values` as (expression, pair);
        `soft`: the soft-delete flag's expression (the source's is `false`)."""
        keys = {k.target.name for k in self.plan.keys}
        parts = _pg_parts(
            [
                (expr, pr.target.type_oid, pr.target.name not in keys and not pr.target.not_null)
                for expr, pr in values
            ],
            soft,
        )
        return f"hash_record_extended(ROW({', '.join(parts)}), 0)"

    def source_summary_sql(self, job_sql: str, half: int | None = None) -> str:
        """The source's per-bucket summary: (b, n, s1), one row per non-empty bucket; `half`
        (postgres dialect): only the even (0) or odd (1) buckets, for two queries that share
        the work (`SPLIT_WHEN_KEPT`)."""
        if self.dialect == "postgres":
            values = [(self._source_value(p, c, SRC), p) for p, c in self._pairs(False)]
            h = self._row_hash(values, "false" if self.plan.soft_column else None)
            where = ""
            if half is not None:  # a negative bucket's remainder is -1: "odd" is "not 0"
                where = f" WHERE {self.source_bucket()} % 2 {'=' if half == 0 else '<>'} 0"
            return (
                f"SELECT b, count(*) AS n, {_pg_sums()} FROM"
                f" (SELECT {self.source_bucket()} AS b, {h} AS h"
                f" FROM ({job_sql}) AS {SRC}{where}) AS r2sf_fp GROUP BY b"
            )
        text = " || '|' || ".join(
            self._text_redshift(f"{SRC}.{ident(p.source)}", p, c) for p, c in self._pairs(False)
        )
        if self.plan.soft_column:
            text += " || '|0'"
        # One 60-bit sum: two sums of one MD5 needed it in a subquery, which cost PostgreSQL
        # (the target, the shim's upstream) twice the time. Summed as DECIMAL: Redshift sums
        # BIGINTs into a BIGINT, which 60-bit values of more than 8 rows would overflow.
        # Ordered by the count, an order no plan gives by itself: the whole summary is computed
        # before the first FETCH returns (as a cluster does anyway, on its leader node), not a
        # little at each FETCH, one round trip at a time.
        return (
            f"SELECT {self.source_bucket()} AS b, COUNT(*) AS n,"
            f" SUM(CAST(STRTOL(SUBSTRING(MD5({text}), 1, 15), 16) AS DECIMAL(19, 0))) AS s1"
            f" FROM ({job_sql}) AS {SRC} GROUP BY 1 ORDER BY 2"
        )

    def target_summary_sql(self, staged: bool = False) -> str:
        """The target's per-bucket summary of its live rows, and every row's count (n_all);
        `staged`: of the rows whose key is staged only, each looked up in the key's unique
        index (after a merge that wrote every difference, exactly the rows of the buckets that
        differed)."""
        p = self.plan
        rows = f"{p.target.sql} t"
        if staged:
            rows = f"{STAGING} s JOIN {rows} ON {p.key_join()}"
        # Live: not flagged as deleted (a NULL flag is live, as the merge's deletes judge it).
        soft = f"t.{ident(p.soft_column)}" if p.soft_column else None
        live = f"{soft} IS NOT TRUE" if soft else "true"
        if self.dialect == "postgres":
            h = self._row_hash([(self._target_value(pr, "t"), pr) for pr in p.pairs], soft)
            if not p.soft_column:  # every row is live: no filters to evaluate per row
                return (
                    f"SELECT b, count(*) AS n, {_pg_sums()}, count(*) AS n_all FROM"
                    f" (SELECT {self.target_bucket('t')} AS b, {h} AS h"
                    f" FROM {rows}) AS r2sf_fp GROUP BY b"
                )
            return (
                f"SELECT b, count(*) FILTER (WHERE live) AS n,"
                f" {_pg_sums('live')},"
                " count(*) AS n_all FROM"
                f" (SELECT {self.target_bucket('t')} AS b, {h} AS h, {live} AS live"
                f" FROM {rows}) AS r2sf_fp GROUP BY b"
            )
        text = " || '|' || ".join(
            self._text_pg(f"t.{ident(pr.target.name)}", pr, c) for pr, c in self._pairs(False)
        )
        if soft:  # NULL, false and true told apart; the source's rows are all `false`
            text += f" || '|' || coalesce(CAST(CAST({soft} AS int) AS text), '2')"
        h = _hex(f"md5({text})", 1, 15)
        only = f" FILTER (WHERE {live})" if soft else ""
        return (
            f"SELECT {self.target_bucket('t')} AS b, count(*){only} AS n,"
            f" coalesce(sum({h}){only}, 0) AS s1, count(*) AS n_all"
            f" FROM {rows} GROUP BY 1"
        )

    def filtered_sql(self, job_sql: str, buckets: Sequence[int]) -> str:
        """The job's query limited to the rows of `buckets` (integers this module computed)."""
        ids = ",".join(str(int(b)) for b in buckets)
        where = (
            f"{self.source_bucket()} = ANY({_int_array(buckets)})"
            if self.dialect == "postgres"
            else f"{self.source_bucket()} IN ({ids})"
        )
        return f"SELECT * FROM ({job_sql}) AS {SRC} WHERE {where}"

    def restrict(self, buckets: Sequence[int], alias: str = "t") -> str:
        """SQL: target row `alias` lies in one of `buckets` (those that differ): a hashed
        array lookup per row, whatever join methods the run has turned off."""
        return f"{self.target_bucket(alias)} = ANY({_int_array(buckets)})"


def _pg_parts(values: list[tuple[str, int, bool]], soft: str | None) -> list[str]:
    """The ROW a PostgreSQL-dialect row hash is computed over: each (expression, target type,
    nullable), as its send form where `SEND` has one, then a mask of which other nullable
    values are NULL (a send form's NULL hashes as 0, its bytes almost never do) and the
    soft-delete flag (NULL, false and true told apart)."""
    parts: list[str] = []
    masked: list[str] = []
    for expr, oid, nullable in values:
        if oid in SEND:
            parts.append(f"{SEND[oid]}({expr})")
            continue
        parts.append(expr)
        if nullable:
            masked.append(expr)
    for start in range(0, len(masked), 62):
        flags = " + ".join(
            f"(CASE WHEN {expr} IS NULL THEN {1 << i} ELSE 0 END)"
            for i, expr in enumerate(masked[start : start + 62])
        )
        parts.append(f"CAST({flags} AS bigint)")
    if soft is not None:
        parts.append(f"coalesce(CAST({soft} AS int), 2)")
    return parts


def _pg_sums(only: str | None = None) -> str:
    """The sum of each row's 64-bit hash `h`, hashed once more (as a float8: 53 bits kept) so
    that rows are not linear combinations of their values' hashes (two rows of a bucket
    swapping one column's values would leave a sum of raw row hashes as it was); exact:
    PostgreSQL sums bigints as numeric. `only`: the rows counted."""
    g = "hashfloat8extended(CAST(h AS float8), 0)"
    if only is None:
        return f"sum({g}) AS s1"
    return f"coalesce(sum({g}) FILTER (WHERE {only}), 0) AS s1"


def _numeric_text(text: str) -> str:
    """A number's text without trailing fractional zeros (both dialects): into a numeric
    column 1.0 and 1.00 are the same value, as the merge's comparison finds them."""
    return (
        f"CASE WHEN POSITION('.' IN {text}) > 0 THEN RTRIM(RTRIM({text}, '0'), '.') ELSE {text} END"
    )


def _int_array(values: Sequence[int]) -> str:
    """A bigint[] literal of integers this module computed (never a user's text)."""
    return "'{" + ",".join(str(int(v)) for v in values) + "}'::bigint[]"


def _hex(expr: str, start: int, length: int) -> str:
    """PostgreSQL: the unsigned integer of `length` hex digits of `expr` from `start`
    (Redshift's STRTOL(SUBSTRING(expr, start, length), 16))."""
    return f"('x' || substring({expr}, {start}, {length}))::bit({4 * length})::bigint"


async def layout(conn: Any, dialect: Dialect, plan: Plan, columns: Sequence[SourceColumn],
                 target_rows: float) -> Fingerprints:  # fmt: skip
    """How this run buckets keys: by key range for one integer key column, ROWS_PER_BUCKET / 2
    rows per range on average judged from the target's key span; else by a hash of the key."""
    by_name = {c.name: c for c in columns}
    keys = plan.keys
    if (
        len(keys) == 1
        and keys[0].target.type_oid in _INTEGERS
        and keys[0].target.not_null  # a NULL key (a unique index allows one) has no range
        and by_name[keys[0].source].type_oid in _INTEGERS
        and not by_name[keys[0].source].cast_to_text
    ):
        col = ident(keys[0].target.name)
        span = await conn.fetchrow(
            f"SELECT min({col}) AS lo, max({col}) AS hi FROM {plan.target.sql}"
        )
        if span["lo"] is not None:
            keys_per_row = (span["hi"] - span["lo"] + 1) / max(target_rows, 1.0)
            span_keys = float(span["hi"] - span["lo"] + 1)
            width = max(1.0, keys_per_row * ROWS_PER_BUCKET / 2, span_keys / MAX_BUCKETS)
            shift = min(62, round(math.log2(width)))
            return Fingerprints(dialect, bucket_count(target_rows), plan, columns, shift)
    return Fingerprints(dialect, bucket_count(target_rows), plan, columns)


def bucket_count(target_rows: float) -> int:
    """A power of two giving ROWS_PER_BUCKET to 2x ROWS_PER_BUCKET target rows per bucket:
    fewer buckets summarise faster, smaller ones stage fewer rows around each change."""
    want = max(1.0, target_rows / ROWS_PER_BUCKET)
    return int(min(MAX_BUCKETS, 2 ** math.floor(math.log2(want))))


async def candidate(conn: Any, job: Job, full_refresh: bool) -> float | None:
    """The target's estimated rows when this run may compare fingerprints (a rerun of a full
    job into a target big enough to gain from it), else None."""
    if job.incremental is not None or full_refresh or job.compare == "full":
        return None
    if job.heroku_connect is not None:
        return None  # ownership and Salesforce's stored values: every row is compared
    row = await conn.fetchrow(
        "SELECT c.reltuples, current_setting('server_version_num')::int AS version"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
        job.target_schema,
        job.target_table,
    )
    if row is None or row["version"] < 140000:
        return None  # hash_record_extended is PostgreSQL 14+
    if row["reltuples"] >= MIN_ROWS:
        return float(row["reltuples"])
    if job.compare != "fingerprints":
        return None
    # Asked for on a small (or never analyzed) target: count it, for the bucket count.
    table = f"{ident(job.target_schema)}.{ident(job.target_table)}"
    rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
    return float(rows) if rows else None


def why_not(plan: Plan, dialect: Dialect, columns: Sequence[SourceColumn]) -> str | None:
    """Why this job's rerun cannot compare fingerprints, beyond what `candidate` ruled out
    (None: it can)."""
    if dialect == "postgres":
        for k in plan.keys:
            if k.target.type_oid not in HASHABLE:
                return f"key column {k.source} is not of a type fingerprints can bucket"
    if dialect == "redshift":
        by_name = {c.name: c for c in columns}
        for k in plan.keys:
            col = by_name[k.source]
            if col.type_oid not in TEXT_ALIKE or k.target.type_oid not in TEXT_ALIKE:
                return f"key column {k.source} is not an integer or text column"
    return None


# ---------------------------------------------------------------- kept summaries
#
# After a run that compared fingerprints and wrote every difference (hard deletes, no skipped
# row), the run keeps the target's summary in r2sf.fp_kept: the source's for the buckets found
# equal (the run wrote nothing there), and for the buckets that differed, the source's when the
# rows staged were read in the summary's snapshot (a PostgreSQL source), else the target's own,
# summarised again after the merge from those buckets' rows, the rows whose key is staged (a
# Redshift source: a row changed between the two queries is then kept as written, never as the
# summary saw it). The next run need not summarise the target again, provided nothing else
# wrote to it since: the data-version triggers (odata/versions.py) bump the table's version on
# every write, by anyone, in the writer's transaction. A kept summary is used only when that
# version, the table's file (TRUNCATE, ALTER TABLE, VACUUM FULL make a new one), the layout and
# the triggers are as the keeping run left them, and for at most KEPT_FOR after the target was
# last summarised from its rows.

KEPT_FOR = "1 day"


def may_keep(job: Job, plan: Plan) -> bool:
    """Whether a run of this job leaves the target summarising to the source's summary in the
    buckets it found equal: it writes every difference (hard deletes, no skipped row)."""
    return job.deletes == "hard" and not plan.has_skipped and plan.external_id is None


def layout_key(fp: Fingerprints) -> str:
    """What a kept summary must have been computed with to be reused."""
    text = f"{fp.dialect} {fp.description} {fp.target_summary_sql()}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


async def target_version(conn: Any, relid: int) -> int:
    version: int = await conn.fetchval(
        "SELECT coalesce((SELECT version FROM r2sf.data_versions WHERE relid = $1), 0)", relid
    )
    return version


# What a kept summary was computed over besides the rows: the table's columns (a column
# dropped and added again, two renamed, a collation changed: no file rewritten, no trigger
# fired) and its data-version triggers (their catalogue rows change, xmin included, whenever
# one is disabled, enabled or replaced). NULL for a table that cannot keep one: anything but a
# permanent plain table that is neither a partition nor part of an inheritance tree (a write
# through a parent or to a child fires no statement trigger here), or one with rules or
# triggers of its own (they may write other values than the merge did, or none).
_TABLE_STATE = """
SELECT CASE WHEN c.relkind = 'r' AND c.relpersistence = 'p' AND NOT c.relispartition
            AND NOT c.relhassubclass AND NOT c.relhasrules
            AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
            AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid
                            AND NOT g.tgisinternal AND g.tgname NOT LIKE 'r2sf\\_%')
THEN md5(
  (SELECT string_agg(a.attnum || ':' || a.attname || ':' || a.atttypid || ':' || a.atttypmod
                     || ':' || a.attcollation || ':' || a.attisdropped, ',' ORDER BY a.attnum)
   FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0)
  || '/' || coalesce((SELECT string_agg(g.tgname || ':' || g.xmin::text || ':'
                                        || g.tgenabled::text, ',' ORDER BY g.tgname)
                      FROM pg_trigger g WHERE g.tgrelid = c.oid
                        AND g.tgname LIKE 'r2sf\\_dv\\_%'), ''))
END
FROM pg_class c WHERE c.oid = $1
"""


async def _layout_now(conn: Any, fp: Fingerprints, relid: int) -> str | None:
    """The layout key a kept summary must match: how it buckets and hashes, and the table's
    columns and triggers as they are now (None: the table cannot keep one)."""
    state = await conn.fetchval(_TABLE_STATE, relid)
    return None if state is None else f"{layout_key(fp)}/{state}"


async def use_kept(conn: Any, job: str, fp: Fingerprints, relid: int, version: int) -> bool:
    """Make TARGET_FP from the summary the last run kept, when it still describes the target."""
    row = await conn.fetchrow(
        "SELECT relid, filenode, layout, data_version,"
        f" verified_at > now() - interval '{KEPT_FOR}' AS recent,"
        " pg_relation_filenode($2::oid) AS current_filenode"
        " FROM r2sf.fp_state WHERE job = $1",
        job,
        relid,
    )
    if row is None:
        return False
    if (
        not row["recent"]
        or row["relid"] != relid
        or row["filenode"] != row["current_filenode"]
        or row["data_version"] != version
        or row["layout"] != await _layout_now(conn, fp, relid)
        or not await versions.triggers_installed(conn, relid)
    ):
        # Found wanting: dropped (a run that falls back or fails rolls this back, but what
        # made it wanting, a version, a file, a column or a trigger's catalogue row, stays).
        await conn.execute("DELETE FROM r2sf.fp_state WHERE job = $1", job)
        return False
    await conn.execute(
        f"CREATE TEMP TABLE {TARGET_FP} ON COMMIT DROP AS"
        " SELECT u.b, u.n, u.s1, u.n AS n_all"
        " FROM r2sf.fp_kept k, unnest(k.b, k.n, k.s1) AS u(b, n, s1) WHERE k.job = $1",
        job,
    )
    return True


async def hold_version(conn: Any, cmp: Comparison, schema: str, table: str) -> bool:
    """Before the merge writes: lock the target's data-version row until the run commits (other
    writers' triggers wait for it) and say whether the run may keep its summary: True when no
    one else wrote to the target since the run read its version. Installs the triggers a
    target lacks (that run keeps nothing: writes before them went unseen)."""
    if await conn.fetchval(_TABLE_STATE, cmp.relid) is None:
        return False  # partitioned, or a parent of inheritance children
    if not await versions.triggers_installed(conn, cmp.relid):
        await versions.install_triggers(conn, schema, table, cmp.relid)
        return False
    await conn.execute(
        "INSERT INTO r2sf.data_versions (relid, version) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        cmp.relid,
    )
    now = await conn.fetchval(
        "SELECT version FROM r2sf.data_versions WHERE relid = $1 FOR UPDATE", cmp.relid
    )
    return bool(now == cmp.version)


async def keep(conn: Any, job: str, cmp: Comparison) -> None:
    """After the merge, in the run's transaction: keep the target's summary as it now is (see
    "kept summaries" above)."""
    if cmp.kept and not cmp.differing:
        return  # the kept summary is the source's, and the merge wrote nothing
    fp = cmp.fp
    await conn.execute(
        "INSERT INTO r2sf.fp_state AS k (job, relid, filenode, layout, data_version, verified_at)"
        " SELECT $1, $2, pg_relation_filenode($2::oid), $3,"
        " coalesce((SELECT version FROM r2sf.data_versions WHERE relid = $2), 0), now()"
        " ON CONFLICT (job) DO UPDATE SET relid = excluded.relid, filenode = excluded.filenode,"
        " layout = excluded.layout, data_version = excluded.data_version,"
        " verified_at = CASE WHEN $4 THEN k.verified_at ELSE excluded.verified_at END",
        job,
        cmp.relid,
        await _layout_now(conn, fp, cmp.relid),
        cmp.kept,
    )
    # The source's whole summary (it always summarises every row), or, where the rows staged
    # may differ from what it summarised, the target's own for the buckets that differed; as
    # arrays aggregated in one pass, so element i of each describes the same bucket.
    rows = f"SELECT b, n, s1 FROM {SOURCE_FP}"
    if cmp.differing and not cmp.consistent:
        changed = _int_array(cmp.changed)
        again = fp.target_summary_sql(staged=True)
        rows += (
            f" WHERE NOT b = ANY({changed}) UNION ALL SELECT b, n, s1 FROM ({again}) AS r2sf_again"
        )
    await conn.execute(
        "INSERT INTO r2sf.fp_kept AS k (job, b, n, s1)"
        " SELECT $1, coalesce(array_agg(b), '{}'), coalesce(array_agg(n), '{}'),"
        " coalesce(array_agg(coalesce(s1, 0)), '{}')"
        f" FROM ({rows}) AS r2sf_kept"
        " ON CONFLICT (job) DO UPDATE SET b = excluded.b, n = excluded.n, s1 = excluded.s1",
        job,
    )


class Unusable(Exception):
    """The comparison cannot be trusted or completed this run: compare every row instead."""


@dataclass
class Comparison:
    """The outcome of comparing both sides' summaries."""

    fp: Fingerprints
    source_rows: int  # rows the job's query returns
    target_rows: int  # rows in the target (soft-deleted ones included)
    changed: list[int]  # buckets whose summaries differ
    changed_source_rows: int  # source rows in those buckets: what the run stages
    changed_target_rows: int  # target rows in those buckets
    source_bytes: int  # bytes read from the source: the summaries, then the rows staged
    staged: int = 0  # source rows staged (those of the differing buckets)
    differing: int = 0  # how many buckets differ
    kept: bool = False  # the target's summary was the one kept by the last run
    # The summary and the staged rows were read in one snapshot (else `keep` summarises the
    # differing buckets again from the target).
    consistent: bool = False
    relid: int = 0  # the target table
    version: int = 0  # its data version when the run started

    @property
    def share(self) -> float:
        """The part of the source's rows that would be staged."""
        return self.changed_source_rows / self.source_rows if self.source_rows else 1.0


async def compare(
    conn: Any, fp: Fingerprints, sources: Sequence[Source], kept: bool = False
) -> Comparison:
    """Summarise both sides (the source's queries run while the target summarises) and find
    the buckets that differ; `sources` are the summary queries (one, or two halves), opened
    here unless already open (a Redshift source runs its query when opened). Raises `Unusable`
    when a target row's key has no bucket; an SQL error on either side comes out as the
    driver's (the caller falls back or fails the run; nothing has been written, and its
    savepoint undoes the temporary tables)."""
    aheads = [_Prefetch(_opened(source)) for source in sources]
    try:
        if not kept:  # else `use_kept` made TARGET_FP from the summary kept by the last run
            await conn.execute(
                f"CREATE TEMP TABLE {TARGET_FP} ON COMMIT DROP AS {fp.target_summary_sql()}"
            )
        await conn.execute(
            f"CREATE TEMP TABLE {SOURCE_FP} (b bigint, n bigint, s1 numeric) ON COMMIT DROP"
        )
        for ahead, source in zip(aheads, sources, strict=True):
            await conn.copy_to_table(SOURCE_FP, source=ahead, format=source.format)
    finally:
        for ahead in aheads:
            await ahead.close()
    # Statistics for the comparison below: in `r2sf sync` runs over 156k buckets (kept target
    # summary) it took 0.36-0.38 s without them and 0.09 s with them, the ANALYZE 0.04 s (a
    # psql reproduction on synthetic tables showed no difference: the cause is not pinned).
    await conn.execute(f"ANALYZE {SOURCE_FP}")
    await conn.execute(
        f"CREATE TEMP TABLE {CHANGED} ON COMMIT DROP AS"
        " SELECT coalesce(s.b, t.b) AS b, coalesce(s.n, 0) AS n_source,"
        " coalesce(t.n_all, 0) AS n_target"
        f" FROM {SOURCE_FP} s FULL JOIN {TARGET_FP} t ON t.b = s.b"
        " WHERE (coalesce(s.n, 0), coalesce(s.s1, 0)) IS DISTINCT FROM (coalesce(t.n, 0), t.s1)"
    )
    await conn.execute(f"ANALYZE {CHANGED}")
    totals = await conn.fetchrow(
        f"SELECT (SELECT coalesce(sum(n), 0) FROM {SOURCE_FP}) AS source_rows,"
        f" (SELECT coalesce(sum(n_all), 0) FROM {TARGET_FP}) AS target_rows,"
        " coalesce(sum(n_source), 0) AS changed_source,"
        " coalesce(sum(n_target), 0) AS changed_target,"
        " count(*) AS differing, coalesce(bool_or(b IS NULL), false) AS null_bucket"
        f" FROM {CHANGED}"
    )
    if totals["null_bucket"]:
        raise Unusable("a target row's key has no bucket (NULL)")
    cmp = Comparison(
        fp,
        int(totals["source_rows"]),
        int(totals["target_rows"]),
        [],
        int(totals["changed_source"]),
        int(totals["changed_target"]),
        sum(source.nbytes for source in sources),
        differing=int(totals["differing"]),
    )
    if cmp.share <= MAX_SHARE:  # else the list is not used, however long it is
        cmp.changed = [r[0] for r in await conn.fetch(f"SELECT b FROM {CHANGED} ORDER BY b")]
    return cmp


async def _opened(source: Source) -> AsyncIterator[bytes]:
    if getattr(source, "columns", None) is None:
        await source.open()
    async for chunk in source.batches():
        yield chunk


async def verify_staged(conn: Any, cmp: Comparison, staging: str) -> None:
    """Check that the staged rows are exactly those of the differing buckets, by the target's
    own reckoning of their buckets: what deletes rely on. Raises `Unusable` otherwise."""
    fp = cmp.fp
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE NOT {fp.staged_bucket('s')}"
        f" = ANY({_int_array(cmp.changed)})) AS stray FROM {staging} s"
    )
    if row["stray"] or row["n"] != cmp.changed_source_rows:
        raise Unusable(
            f"{row['stray']} of {row['n']} staged rows fall in other buckets on the target"
            f" (expected {cmp.changed_source_rows} rows)"
        )
    if fp.shift is not None:
        return  # `key >> shift` of the same integer: the same bucket on both sides
    # And the target's row of the same key lies in the same bucket by the target's reckoning
    # (looked up by key when the staged rows are a small part of the target).
    few = row["n"] * NESTED_SHARE < cmp.target_rows
    if few:
        await conn.execute("SET LOCAL enable_hashjoin = off")
        await conn.execute("SET LOCAL enable_mergejoin = off")
    apart = await conn.fetchval(
        f"SELECT count(*) FROM {staging} s JOIN {fp.plan.target.sql} t ON {fp.plan.key_join()}"
        f" WHERE {fp.staged_bucket('s')} IS DISTINCT FROM {fp.target_bucket('t')}"
    )
    if few:
        await conn.execute("SET LOCAL enable_hashjoin = on")
        await conn.execute("SET LOCAL enable_mergejoin = on")
    if apart:
        raise Unusable(f"{apart} staged rows fall in another bucket than the target's row")


class _Prefetch:
    """Reads an async iterator of chunks ahead into a small queue, from now on: the source
    computes its summary while the target computes its own."""

    def __init__(self, chunks: AsyncIterator[bytes], depth: int = 16) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        self.task = asyncio.create_task(self._run(chunks))

    async def _run(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                await self.queue.put(chunk)
        except BaseException as exc:
            await self.queue.put(exc)
            raise
        await self.queue.put(_END)

    def __aiter__(self) -> _Prefetch:
        return self

    async def __anext__(self) -> bytes:
        item = await self.queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        chunk: bytes = item
        return chunk

    async def close(self) -> None:
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


_END = object()
