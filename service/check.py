"""`r2sf check`: validate the configuration, both connections and what Salesforce will see.

Prints one line per connection (ok, or which failure: DNS, refused, timeout, auth, SSL...), then
every entity set with its key and each property's Edm type and the Salesforce field type it
becomes (spec §5), then warnings about what will hurt in Salesforce, and the CREATE INDEX
statements large sets need for list-view sorts and filters. Reads only: it never
writes to either database, and never prints a password.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg

from odata.catalog import load_model, matches
from odata.errors import CatalogError
from odata.ident import ident
from odata.model import EntitySet, Model, Property
from odata.naming import MAX_LENGTH
from service.config import ConfigError, ODataConfig, Settings, load_settings, redact_url

CONNECT_TIMEOUT = 10.0
MAX_EXTERNAL_OBJECTS = 200  # per Salesforce org (spec §5)
MAX_SAFE_INTEGER = 2**53  # Salesforce Number fields are doubles beyond this (spec §5)
MAX_NUMBER_DIGITS = 18

_NUMBER_DIGITS = {"Edm.Byte": 3, "Edm.SByte": 3, "Edm.Int16": 5, "Edm.Int32": 10, "Edm.Int64": 18}

# Sets estimated (pg_class.reltuples) above this many rows are checked for the indexes that
# list views need: below it, reading the whole table is quick enough.
INDEX_WARNING_ROWS = 100_000
# What Salesforce list views sort and filter on: text, number and date fields. Text longer than
# 255 becomes a Long Text Area, which Salesforce can neither sort nor filter on (and long values
# may not fit a btree entry at all).
_LIST_VIEW_TYPES = frozenset(
    {*_NUMBER_DIGITS, "Edm.Decimal", "Edm.Single", "Edm.Double", "Edm.String", "Edm.Date",
     "Edm.DateTimeOffset"}
)  # fmt: skip
_NAMES_SHOWN = 10  # property names listed per set in a warning; the statements list them all


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check", help="validate the config, test both connections, preview the Salesforce fields"
    )
    check.set_defaults(handler=check_command)


def salesforce_field_type(p: Property) -> str:
    """The Salesforce field type an Edm property becomes in an external object (spec §5)."""
    t = p.edm_type
    if t == "Edm.Boolean":
        return "Checkbox"
    if t == "Edm.String":
        if p.max_length is None:
            return "Text(128)"
        if p.max_length <= 255:
            return f"Text({p.max_length})"
        return f"Long Text Area({p.max_length})"
    if t == "Edm.Decimal":
        return f"Number({p.precision or MAX_NUMBER_DIGITS},{p.scale or 0})"
    if t in _NUMBER_DIGITS:
        return f"Number({_NUMBER_DIGITS[t]},0)"
    if t in ("Edm.Single", "Edm.Double"):
        return "Number"
    if t == "Edm.Date":
        return "Date/Time (at midnight)"
    if t == "Edm.DateTimeOffset":
        return "Date/Time"
    if t == "Edm.Guid":
        return "Text(36)"
    if t == "Edm.Binary":
        return "Text (base64)"
    if t == "Edm.TimeOfDay":
        return "Text"
    return "not supported"


def explain_connect_error(exc: BaseException) -> str:
    """`kind: detail` for a failed connection, the kind being what the operator must fix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if (
        isinstance(exc, socket.gaierror)
        or "name or service not known" in low
        or ("getaddrinfo" in low or "nodename nor servname" in low or "name resolution" in low)
    ):
        return f"DNS: the host name does not resolve ({text})"
    if isinstance(exc, FileNotFoundError):  # a unix socket path with no server behind it
        return f"refused: no server listens on that socket ({text})"
    if isinstance(exc, ConnectionRefusedError) or "connection refused" in low:
        return f"refused: nothing accepts connections at that host and port ({text})"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or "timed out" in low:
        return (
            f"timeout: no answer within {CONNECT_TIMEOUT:g} s (a firewall, security group or"
            " trusted-IP list is dropping the connection?)"
        )
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ) or ("password authentication failed" in low or "authentication" in low):
        return f"auth: the server refused the user or password ({text})"
    if isinstance(exc, ssl.SSLError) or "ssl" in low or "certificate" in low:
        return f"SSL: {text}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError) or (
        "database" in low and "does not exist" in low
    ):
        return f"database: {text}"
    if isinstance(exc, OSError):
        return f"network: {text}"
    return f"{type(exc).__name__}: {text}"


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)  # suggested CREATE INDEX lines


async def _connect_postgres(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, statement_cache_size=0)


def _connect_redshift(url: str) -> str:
    from sync import redshift, warehouse

    args = warehouse.connect_args(url)
    args["timeout"] = min(int(args["timeout"]), int(CONNECT_TIMEOUT))
    conn = redshift.connect(**args)
    try:
        cur = conn.cursor()
        cur.execute("SELECT version()")
        row = cur.fetchone()
        return str(row[0]) if row else "connected"
    finally:
        conn.close()


async def check_source(url: str) -> str:
    """'ok (version)' or raises the driver's exception."""
    if url.split("://", 1)[0] == "redshift":
        version = await asyncio.to_thread(_connect_redshift, url)
        return version
    conn = await _connect_postgres(url)
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


def _short_version(version: str) -> str:
    return " ".join(version.split()[:2])


async def run_check(settings: Settings, out: TextIO) -> Findings:
    found = Findings()
    where = (
        settings.config_where
        if settings.config_path is not None or settings.config_where != "r2sf.toml"
        else "r2sf.toml (not found: defaults)"
    )
    jobs: list[Any] = []
    source: str | None = None
    try:
        from sync.config import load_jobs, source_url

        jobs = load_jobs(settings.file, settings.config_where)
        if jobs or settings.file.source.model_fields_set:
            source = source_url(settings.file, settings.config_where)
    except ConfigError as exc:
        found.errors.append(f"config: {exc}")
    print(f"config  {where}: {len(jobs)} sync job(s)", file=out)
    if not settings.credentials:
        found.warnings.append(
            "ODATA_CREDENTIALS is not set: `r2sf serve` refuses to start without credentials"
        )

    if source is not None:
        from sync.warehouse import describe

        label = f"source  {redact_url(source)}"
        try:
            print(f"{label}: ok ({_short_version(await check_source(source))})", file=out)
            source_ok = True
        except Exception as exc:
            line = f"{label}: FAILED {explain_connect_error(exc)}"
            print(line, file=out)
            found.errors.append(line)
            source_ok = False
        print(f"        {describe(source)}", file=out)
        if source_ok:
            await _check_jobs(jobs, source, out, found)
    else:
        print("source  none configured (no [[sync.jobs]]; REDSHIFT_URL not needed)", file=out)

    label = f"target  {redact_url(settings.database_url)}"
    try:
        conn = await _connect_postgres(settings.database_url)
    except Exception as exc:
        line = f"{label}: FAILED {explain_connect_error(exc)}"
        print(line, file=out)
        found.errors.append(line)
        return found
    try:
        version = await conn.fetchval("SELECT version()")
        print(f"{label}: ok ({_short_version(version)})", file=out)
        await _check_model(conn, settings, out, found)
    finally:
        await conn.close()
    await _check_routes(settings, out, found)
    return found


async def _check_routes(settings: Settings, out: TextIO, found: Findings) -> None:
    """Which URL is what (primary, pooler, follower) and what goes where (docs §9)."""
    from service import database

    urls = [("DATABASE_URL", settings.database_url)]
    if settings.pool_url:
        urls.append(("DATABASE_CONNECTION_POOL_URL", settings.pool_url))
    if settings.follower_url:
        urls.append(("DATABASE_FOLLOWER_URL", settings.follower_url))
    for variable, url in urls:
        label = f"{variable}  {redact_url(url)}"
        try:
            pooler = await database.is_pooler(url, CONNECT_TIMEOUT)
            facts = ["a pooler" if pooler else "direct"]
            if pooler:
                passes = await database.prepared_statements_pass(url, CONNECT_TIMEOUT)
                facts.append(
                    "prepared statements pass through"
                    if passes
                    else "prepared statements do not pass through (r2sf prepares none on it)"
                    if passes is False
                    else "prepared statements: cannot tell (too few server connections)"
                )
            else:
                conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, statement_cache_size=0)
                try:
                    recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
                finally:
                    await conn.close()
                facts.append("a follower (read-only replica)" if recovery else "the primary")
        except Exception as exc:
            line = f"{label}: FAILED {explain_connect_error(exc)}"
            print(line, file=out)
            found.errors.append(line)
            continue
        print(f"{label}: {', '.join(facts)}; used for {_role(settings, variable)}", file=out)
        if variable == "DATABASE_URL" and pooler:
            found.errors.append(
                "DATABASE_URL leads to a pooler: the change listener (LISTEN) and the sync need"
                " the primary directly; set the pooler as DATABASE_CONNECTION_POOL_URL instead"
            )
        if variable == "DATABASE_CONNECTION_POOL_URL" and not pooler:
            found.warnings.append(
                "DATABASE_CONNECTION_POOL_URL answers like PostgreSQL itself, not a pooler"
            )
        if variable == "DATABASE_FOLLOWER_URL" and "a follower (read-only replica)" not in facts:
            found.warnings.append(
                "DATABASE_FOLLOWER_URL is not a follower (not in recovery): reads go to it anyway"
            )


def _role(settings: Settings, variable: str) -> str:
    """What r2sf sends to the URL in `variable` (docs/architecture.md, "Past one dyno")."""
    roles = {
        "DATABASE_URL": ["the change listener", "sync", "migrations"],
        "DATABASE_CONNECTION_POOL_URL": [],
        "DATABASE_FOLLOWER_URL": ["OData reads (the primary answers while it lags)"],
    }
    writer = "DATABASE_CONNECTION_POOL_URL" if settings.pool_url else "DATABASE_URL"
    roles[writer] += ["OData writes", "model loads", "change tracking"]
    if not settings.follower_url:
        roles[writer].append("OData reads")
    return ", ".join(roles[variable])


async def _check_jobs(jobs: list[Any], source: str, out: TextIO, found: Findings) -> None:
    """Each job's columns as the warehouse describes them: refused types are errors, and
    Redshift-only types say what the target gets."""
    from sync.source import describe

    for job in jobs:
        try:
            columns, cluster = await describe(source, job.source_sql, job.table)
        except ValueError as exc:
            found.errors.append(f"job {job.name}: {exc}")
            print(f"job     {job.name}: FAILED {exc}", file=out)
            continue
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            found.errors.append(f"job {job.name}: the source query fails: {text}")
            print(f"job     {job.name}: FAILED the source query fails: {text}", file=out)
            continue
        extra = ""
        if cluster.get("fetch_size"):
            nodes = cluster.get("nodes")
            extra = f", FETCH {cluster['fetch_size']} rows" + (
                f" ({nodes} node(s))" if nodes else " (node count unknown)"
            )
        print(f"job     {job.name}: {len(columns)} column(s) ok{extra}", file=out)
        for c in columns:
            if c.redshift_type:
                print(f"          {c.name}: {c.redshift_type}", file=out)


async def _check_model(conn: Any, settings: Settings, out: TextIO, found: Findings) -> None:
    o = settings.odata
    from service.config import service_config

    config = service_config(settings)
    try:
        model = await load_model(
            conn,
            expose=config.expose,
            sets=config.sets,
            unsupported_types=o.unsupported_types,
            change_tracking=o.change_tracking,
        )
    except CatalogError as exc:
        found.errors.append(f"odata: {exc}")
        return
    print(f"\nentity sets ({len(model.entity_sets)}) at {o.path}/:", file=out)
    for s in model.entity_sets:
        _print_set(s, out)
    await model_warnings(conn, model, o, found)
    if len(model.entity_sets) > MAX_EXTERNAL_OBJECTS:
        found.warnings.append(
            f"{len(model.entity_sets)} entity sets: a Salesforce org holds at most"
            f" {MAX_EXTERNAL_OBJECTS} external objects; narrow [odata] expose"
        )
    if not model.entity_sets:
        found.warnings.append(
            f"no entity sets: nothing matches [odata] expose = {list(o.expose)} (or the"
            " tables have no key)"
        )


async def model_warnings(conn: Any, model: Model, o: ODataConfig, found: Findings) -> Findings:
    """What `r2sf check` warns about an exposed model (names, unexposed tables, numbers
    Salesforce cannot hold, missing indexes); also shown in the console's sets page."""
    configured_names = {x.table for x in o.sets if x.name}
    _warn_names(model, configured_names, found)
    await _warn_not_exposed(conn, model, list(o.expose) + [x.table for x in o.sets], found)
    await _warn_numbers(conn, model, found)
    await _warn_indexes(conn, model, found)
    return found


def _print_set(s: EntitySet, out: TextIO) -> None:
    extra = " (view, read-only)" if s.is_view else ("" if s.writable else " (read-only)")
    if s.tracked:
        extra += " (change tracking on: delta links for Salesforce's Track Data Changes)"
    print(f"  {s.name} <- {s.schema}.{s.table}{extra}", file=out)
    print(f"    key: {', '.join(s.entity_type.key)}", file=out)
    width = max(len(p.name) for p in s.entity_type.properties)
    for p in s.entity_type.properties:
        facets = []
        if p.max_length is not None:
            facets.append(f"MaxLength={p.max_length}")
        if p.precision is not None and p.edm_type == "Edm.Decimal":
            facets.append(f"Precision={p.precision},Scale={p.scale or 0}")
        edm = p.edm_type + (f"({', '.join(facets)})" if facets else "")
        renamed = f"  (column {p.column})" if p.name != p.column else ""
        print(f"    {p.name:<{width}}  {edm:<36} -> {salesforce_field_type(p)}{renamed}", file=out)


def _warn_names(model: Model, configured: set[str], found: Findings) -> None:
    for s in model.entity_sets:
        qualified = f"{s.schema}.{s.table}"
        if s.name != s.table and qualified not in configured:
            why = (
                "longer than 40 characters" if len(s.table) > MAX_LENGTH else "not Salesforce-safe"
            )
            found.warnings.append(
                f'{qualified} is exposed as {s.name} ({why}); set name = "..." in'
                " [[odata.sets]] to choose the name yourself"
            )
        for p in s.entity_type.properties:
            if p.name != p.column:
                why = (
                    "longer than 40 characters"
                    if len(p.column) > MAX_LENGTH
                    else "not Salesforce-safe"
                )
                found.warnings.append(
                    f"{s.name}: column {p.column!r} is renamed to {p.name} ({why}); Salesforce"
                    " users see the new name"
                )
            if p.edm_type == "Edm.String" and p.max_length is None:
                found.warnings.append(
                    f"{s.name}.{p.name}: String without MaxLength becomes Text(128) in"
                    " Salesforce, which shows only 128 characters; give the column a length"
                    " (varchar(n)) or cast it in a view"
                )


_RELATIONS_SQL = """
select n.nspname as schema, c.relname as table, c.relkind::text as kind
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'f') and not c.relispartition
  and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'r2sf')
  and n.nspname not like 'pg\\_%'
"""


async def _warn_not_exposed(conn: Any, model: Model, patterns: list[str], found: Findings) -> None:
    exposed = {(s.schema, s.table) for s in model.entity_sets}
    for r in await conn.fetch(_RELATIONS_SQL):
        if (r["schema"], r["table"]) in exposed or not matches(patterns, r["schema"], r["table"]):
            continue
        what = "view" if r["kind"] in ("v", "m", "f") else "table"
        fix = (
            f'add [[odata.sets]] table = "{r["schema"]}.{r["table"]}" with key = [...]'
            if what == "view"
            else "give it a primary key"
        )
        found.warnings.append(
            f"{r['schema']}.{r['table']} ({what}) is not exposed: it has no key; {fix}"
        )


_NUMERIC_SQL = """
select a.attname as column, a.atttypmod as typmod
from pg_attribute a join pg_type t on t.oid = a.atttypid
where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped
  and t.typname = 'numeric'
"""


async def _warn_numbers(conn: Any, model: Model, found: Findings) -> None:
    for s in model.entity_sets:
        table = f"{ident(s.schema)}.{ident(s.table)}"
        by_column = {p.column: p for p in s.entity_type.properties}
        for r in await conn.fetch(_NUMERIC_SQL, table):
            p = by_column.get(r["column"])
            if p is None:
                continue
            typmod = r["typmod"]
            precision = ((typmod - 4) >> 16) & 0xFFFF if typmod >= 0 else None
            if precision is None or precision > MAX_NUMBER_DIGITS:
                declared = (
                    f"numeric({precision},{(typmod - 4) & 0xFFFF})"
                    if precision
                    else "numeric without precision"
                )
                found.warnings.append(
                    f"{s.name}.{p.name}: {declared} is declared as Precision"
                    f" {p.precision}, Scale {p.scale} (Salesforce Number holds at most 18 digits);"
                    " larger values will not fit"
                )
        for p in s.entity_type.key_properties:
            if p.edm_type != "Edm.Int64":
                continue
            col = ident(p.column)
            lo, hi = await conn.fetchrow(f"select min({col}), max({col}) from {table}")
            if (hi is not None and hi > MAX_SAFE_INTEGER) or (
                lo is not None and lo < -MAX_SAFE_INTEGER
            ):
                worst = hi if hi is not None and hi > MAX_SAFE_INTEGER else lo
                found.warnings.append(
                    f"{s.name}.{p.name}: key value {worst} is beyond 2^53; Salesforce stores"
                    " numbers as doubles, so such keys lose precision and records collide;"
                    " expose the key as text (a view with key::text)"
                )


# Estimated rows (a partitioned table's are its leaf partitions'; -1 when never analysed) and
# every valid, non-partial btree index as its key columns (NULL for an expression) with the
# sort options of the first (pg_index.indoption bits: 1 DESC, 2 NULLS FIRST).
_SIZE_SQL = """
select c.relkind::text as kind,
       case when c.relkind = 'p' then (
           select coalesce(sum(p.reltuples) filter (where p.reltuples >= 0), -1)
           from pg_partition_tree(c.oid) t join pg_class p on p.oid = t.relid where t.isleaf)
       else c.reltuples end as rows
from pg_class c where c.oid = to_regclass($1)
"""
_BTREE_SQL = """
select i.indoption[0] as first_option, array(
    select a.attname::text
    from unnest(i.indkey::int2[]) with ordinality k(attnum, n)
    left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where k.n <= i.indnkeyatts order by k.n
) as columns
from pg_index i
join pg_class ic on ic.oid = i.indexrelid
join pg_am am on am.oid = ic.relam
where i.indrelid = to_regclass($1) and am.amname = 'btree' and i.indisvalid
  and i.indpred is null
"""

_DESC_NULLS_LAST, _ASC_NULLS_FIRST = 1, 2


async def _warn_indexes(conn: Any, model: Model, found: Findings) -> None:
    """Large sets whose list-view properties no btree index starts with: every sort or filter
    on them reads the whole table. Suggests one CREATE INDEX per property."""
    for s in model.entity_sets:
        table = f"{ident(s.schema)}.{ident(s.table)}"
        size = await conn.fetchrow(_SIZE_SQL, table)
        if size is None or size["kind"] not in ("r", "p", "m"):
            continue  # views and foreign tables: their base tables carry the indexes
        if size["rows"] <= INDEX_WARNING_ROWS:
            continue
        found_indexes = await conn.fetch(_BTREE_SQL, table)
        indexes = [list(r["columns"]) for r in found_indexes]
        # OData sorts nulls first ascending and last descending; an index serves that order
        # (either way round) only if its first column is ASC NULLS FIRST or DESC NULLS LAST.
        odata_order = {
            r["columns"][0]
            for r in found_indexes
            if r["columns"] and r["first_option"] in (_ASC_NULLS_FIRST, _DESC_NULLS_LAST)
        }
        leading = {cols[0] for cols in indexes if cols}
        etype = s.entity_type
        key = [p.column for p in etype.key_properties]
        key_indexed = any(set(cols[: len(key)]) == set(key) for cols in indexes)
        missing: list[str] = []
        statements: list[str] = []
        concurrently = "" if size["kind"] == "p" else " CONCURRENTLY"  # not on partitioned tables
        if not key_indexed:
            missing.append(f"the key ({', '.join(etype.key)})")
            columns = ", ".join(ident(c) for c in key)
            statements.append(f"CREATE UNIQUE INDEX{concurrently} ON {table} ({columns});")
        nulls_last: list[str] = []
        for p in etype.properties:
            if p.name in etype.key:  # the key has its own line above
                continue
            if p.edm_type not in _LIST_VIEW_TYPES or (p.max_length or 0) > 255:
                continue
            if p.column in (odata_order if p.nullable else leading):
                continue
            if p.column in leading:
                nulls_last.append(p.name)
            missing.append(p.name)
            order = " NULLS FIRST" if p.nullable else ""
            statements.append(f"CREATE INDEX{concurrently} ON {table} ({ident(p.column)}{order});")
        if not missing:
            continue
        shown = ", ".join(missing[:_NAMES_SHOWN])
        if len(missing) > _NAMES_SHOWN:
            shown += f" and {len(missing) - _NAMES_SHOWN} more"
        why = ""
        if nulls_last:
            why = (
                f" (the indexes on {', '.join(nulls_last)} serve filters but not sorts: they put"
                " nulls last ascending, OData puts them first)"
            )
        found.warnings.append(
            f"{s.name} ({s.schema}.{s.table}, about {int(size['rows']):,} rows): no index for"
            f" list views to sort or filter on {shown}{why}; each such sort or filter reads the"
            " whole table (suggested indexes below)"
        )
        found.indexes.append(f"-- {s.name}")
        found.indexes.extend(statements)


def check_command(args: argparse.Namespace) -> int:
    out = sys.stdout
    # The catalogue logs relations it skips; this command reports them itself, with the fix.
    logging.getLogger("r2sf.odata.catalog").setLevel(logging.ERROR)
    try:
        from service.config_store import with_stored

        settings, _ = with_stored(load_settings(args.config))
    except ConfigError as exc:
        print(f"config  FAILED {exc}", file=out)
        print("\nresult: 1 error", file=out)
        return 2
    found = asyncio.run(run_check(settings, out))
    if found.warnings:
        print(f"\nwarnings ({len(found.warnings)}):", file=out)
        for w in found.warnings:
            print(f"  - {w}", file=out)
    if found.indexes:
        print(
            "\nsuggested indexes (create those for the columns your users sort or filter on;"
            " CONCURRENTLY keeps the table readable and writable meanwhile):",
            file=out,
        )
        for line in found.indexes:
            print(f"  {line}", file=out)
    if found.errors:
        print(f"\nerrors ({len(found.errors)}):", file=out)
        for e in found.errors:
            print(f"  - {e}", file=out)
    verdict = "FAILED" if found.errors else "ok"
    print(
        f"\nresult: {verdict}, {len(found.errors)} error(s), {len(found.warnings)} warning(s)",
        file=out,
    )
    return 1 if found.errors else 0
