"""Build the EDM model from the PostgreSQL catalogue: which relations, which columns, which keys.

Reads `pg_catalog` once (at start-up or on reload) and maps PostgreSQL types to Edm types with
their facets. It decides what is exposed and under which name; it never reads table data.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from odata.model import EntitySet, EntityType, Model, Property
from odata.naming import assign_names, is_safe

log = logging.getLogger("r2sf.odata.catalog")

NAMESPACE = "r2sf"
CONTAINER = "Default"
MAX_DECIMAL_PRECISION = 18  # Salesforce Number fields hold at most 18 digits (spec §5)
UNCONSTRAINED_DECIMAL_SCALE = 6  # numeric without a declared scale (e.g. sum(x)) is shown as (18,6)

# A table with these columns is a Heroku Connect mapped table ("Heroku Connect Database Tables",
# devcenter.heroku.com): its serial `id` is renumbered when Connect reloads the table, so it is
# never the entity key; `sfid`, the Salesforce record id, is.
HEROKU_CONNECT_MARKERS = frozenset({"sfid", "_hc_lastop", "_hc_err"})
HEROKU_CONNECT_KEY = ("sfid",)

# Schemas that are never exposed, whatever `expose` says.
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "r2sf")

# PostgreSQL type (pg_type.typname) -> Edm type. Anything else is "unsupported" and is exposed as
# Edm.String (its text form) or left out, per `unsupported_types`.
_EDM_TYPES = {
    "bool": "Edm.Boolean",
    "int2": "Edm.Int16",
    "int4": "Edm.Int32",
    "int8": "Edm.Int64",
    "numeric": "Edm.Decimal",
    "money": "Edm.Decimal",
    "float4": "Edm.Single",
    "float8": "Edm.Double",
    "text": "Edm.String",
    "varchar": "Edm.String",
    "bpchar": "Edm.String",
    "name": "Edm.String",
    "citext": "Edm.String",
    "date": "Edm.Date",
    "timestamptz": "Edm.DateTimeOffset",
    "timestamp": "Edm.DateTimeOffset",
    "time": "Edm.TimeOfDay",
    "uuid": "Edm.Guid",
    "bytea": "Edm.Binary",
}


def is_native(db_type: str) -> bool:
    """False for types exposed through their text form (json, arrays, intervals, enums, ...)."""
    return db_type in _EDM_TYPES


class CatalogError(Exception):
    """A relation the configuration asks for cannot be exposed; the message says how to fix it."""


@dataclass(frozen=True)
class SetOptions:
    """Per-relation settings from `[[odata.sets]]`."""

    table: str  # schema.table
    name: str | None = None
    key: tuple[str, ...] | None = None
    read_only: bool = False


_RELATIONS_SQL = """
select n.nspname as schema, c.relname as table, c.relkind::text as kind, c.oid
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'f')
  and not c.relispartition
  and n.nspname <> all($1::text[])
  and n.nspname not like 'pg\\_%'
order by n.nspname, c.relname
"""

_COLUMNS_SQL = """
select a.attrelid as oid, a.attname as column, a.attnum as num,
       b.typname as type, t.typtype::text as typtype,
       case when t.typtype = 'd' then t.typtypmod else a.atttypmod end as typmod,
       a.attnotnull as notnull
from pg_attribute a
join pg_type t on t.oid = a.atttypid
-- a domain is exposed as its base type
join pg_type b on b.oid = case when t.typtype = 'd' then t.typbasetype else t.oid end
where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped
order by a.attrelid, a.attnum
"""

_PRIMARY_KEYS_SQL = """
select i.indrelid as oid, array_agg(a.attname order by k.ord) as columns
from pg_index i
cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
where i.indisprimary and i.indrelid = any($1::oid[])
group by i.indrelid
"""


def matches(patterns: Sequence[str], schema: str, table: str) -> bool:
    qualified = f"{schema}.{table}"
    return any(fnmatch.fnmatchcase(qualified, p) for p in patterns)


def edm_facets(typname: str, typmod: int) -> tuple[str | None, int | None, int | None, int | None]:
    """(Edm type, MaxLength, Precision, Scale) for a PostgreSQL type; Edm type None = unsupported."""
    edm = _EDM_TYPES.get(typname)
    if edm is None:
        return None, None, None, None
    if typname in ("varchar", "bpchar") and typmod > 4:
        return edm, typmod - 4, None, None
    if typname == "name":
        return edm, 63, None, None
    if typname == "money":
        return edm, None, MAX_DECIMAL_PRECISION, 2
    if typname == "numeric":
        if typmod < 0:
            return edm, None, MAX_DECIMAL_PRECISION, UNCONSTRAINED_DECIMAL_SCALE
        precision = ((typmod - 4) >> 16) & 0xFFFF
        scale = (typmod - 4) & 0xFFFF
        if scale > 0x7FFF:  # negative scales (PostgreSQL 15+) round to tens; show as integers
            scale = 0
        return edm, None, min(precision, MAX_DECIMAL_PRECISION), min(scale, MAX_DECIMAL_PRECISION)
    if typname in ("timestamptz", "timestamp", "time") and typmod >= 0:
        return edm, None, typmod, None
    return edm, None, None, None


async def load_model(
    conn: asyncpg.Connection,
    *,
    expose: Sequence[str],
    sets: Sequence[SetOptions] = (),
    unsupported_types: Literal["string", "omit"] = "string",
) -> Model:
    """Read the catalogue and build the model for the relations `expose` selects."""
    options = {s.table: s for s in sets}
    patterns = list(expose) + list(options)
    relations = [
        r
        for r in await conn.fetch(_RELATIONS_SQL, list(_SYSTEM_SCHEMAS))
        if matches(patterns, r["schema"], r["table"])
    ]
    missing = set(options) - {f"{r['schema']}.{r['table']}" for r in relations}
    if missing:
        raise CatalogError(
            f"[[odata.sets]] names {', '.join(sorted(missing))}, which is not a table or view in "
            "the database: check the schema.table spelling, or remove the entry"
        )
    oids = [r["oid"] for r in relations]
    columns: dict[int, list[Any]] = {}
    for c in await conn.fetch(_COLUMNS_SQL, oids):
        columns.setdefault(c["oid"], []).append(c)
    primary = {r["oid"]: tuple(r["columns"]) for r in await conn.fetch(_PRIMARY_KEYS_SQL, oids)}

    built: list[tuple[str, str, str, bool, list[Property], tuple[str, ...], SetOptions | None]] = []
    _oid = {f"{r['schema']}.{r['table']}": r["oid"] for r in relations}
    for rel in relations:
        qualified = f"{rel['schema']}.{rel['table']}"
        opt = options.get(qualified)
        is_view = rel["kind"] in ("v", "m", "f")
        key_columns = _key_columns(
            qualified,
            rel["kind"],
            opt,
            primary.get(rel["oid"]),
            [c["column"] for c in columns.get(rel["oid"], [])],
        )
        if key_columns is None:
            continue
        props = _properties(qualified, columns.get(rel["oid"], []), key_columns, unsupported_types)
        if props is None:
            continue
        if key_columns == HEROKU_CONNECT_KEY and primary.get(rel["oid"]) != key_columns:
            log.info(
                "%s is a Heroku Connect mapped table: its entity key is sfid, not the serial id"
                " Heroku Connect renumbers on reload; rows not yet in Salesforce (no sfid) are"
                " not exposed until Heroku Connect has pushed them",
                qualified,
            )
        built.append((rel["schema"], rel["table"], qualified, is_view, props, key_columns, opt))

    set_names = _set_names([(b[2], b[1], b[6]) for b in built])
    entity_sets = []
    for schema, table, qualified, is_view, props, key_columns, opt in built:
        by_column = {p.column: p for p in props}
        not_null = {c["column"] for c in columns.get(_oid[qualified], []) if c["notnull"]}
        entity_type = EntityType(
            name=set_names[qualified],
            properties=tuple(props),
            key=tuple(by_column[c].name for c in key_columns),
        )
        entity_sets.append(
            EntitySet(
                name=set_names[qualified],
                schema=schema,
                table=table,
                entity_type=entity_type,
                is_view=is_view,
                writable=not is_view and not (opt is not None and opt.read_only),
                nullable_key=not set(key_columns) <= not_null,
            )
        )
    entity_sets.sort(key=lambda s: s.name)
    model = Model(namespace=NAMESPACE, container=CONTAINER, entity_sets=tuple(entity_sets))
    _log_mapping(model)
    return model


def _key_columns(
    qualified: str,
    kind: str,
    opt: SetOptions | None,
    primary: tuple[str, ...] | None,
    column_names: list[str],
) -> tuple[str, ...] | None:
    if opt is not None and opt.key:
        unknown = [k for k in opt.key if k not in column_names]
        if unknown:
            raise CatalogError(
                f'[[odata.sets]] table = "{qualified}": key column {unknown[0]!r} does not exist; '
                f"its columns are {', '.join(column_names)}"
            )
        return opt.key
    if set(column_names) >= HEROKU_CONNECT_MARKERS:
        return HEROKU_CONNECT_KEY
    if primary:
        return primary
    if kind in ("v", "m", "f") and "id" in column_names:
        return ("id",)
    hint = (
        f'add key = [...] to its [[odata.sets]] entry (table = "{qualified}")'
        if kind in ("v", "m", "f")
        else "give the table a primary key, or set key = [...] in [[odata.sets]]"
    )
    if opt is not None:
        raise CatalogError(f"{qualified} has no key: {hint}")
    log.warning("not exposing %s: it has no key (%s)", qualified, hint)
    return None


def _properties(
    qualified: str,
    cols: list[Any],
    key_columns: tuple[str, ...],
    unsupported_types: Literal["string", "omit"],
) -> list[Property] | None:
    kept: list[tuple[Any, str, int | None, int | None, int | None]] = []
    for c in cols:
        edm, max_length, precision, scale = edm_facets(c["type"], c["typmod"])
        if edm is None:
            if unsupported_types == "omit" and c["column"] not in key_columns:
                log.info(
                    "%s.%s (%s) left out: Salesforce has no matching type",
                    qualified,
                    c["column"],
                    c["type"],
                )
                continue
            edm = "Edm.String"
        kept.append((c, edm, max_length, precision, scale))
    if not kept:
        return None
    names = assign_names([c["column"] for c, *_ in kept])
    return [
        Property(
            name=names[c["column"]],
            column=c["column"],
            edm_type=edm,
            # Key properties are never null in OData, whatever a view's column says.
            nullable=not c["notnull"] and c["column"] not in key_columns,
            max_length=max_length,
            precision=precision,
            scale=scale,
            db_type=c["type"],
        )
        for c, edm, max_length, precision, scale in kept
    ]


def _set_names(entries: list[tuple[str, str, SetOptions | None]]) -> dict[str, str]:
    configured = {q: o.name for q, _, o in entries if o is not None and o.name}
    for qualified, name in configured.items():
        if not is_safe(name):
            raise CatalogError(
                f'[[odata.sets]] table = "{qualified}": name = "{name}" is not a Salesforce-safe '
                "name (ASCII letter first, then letters, digits or single underscores, at most 40)"
            )
    rest = [(q, table) for q, table, _ in entries if q not in configured]
    # Tables of the same name in two schemas are told apart by their schema.
    tables = [t for _, t in rest]
    raw = {q: (t if tables.count(t) == 1 else q.replace(".", "_")) for q, t in rest}
    assigned = assign_names(sorted(raw.values()), reserved=configured.values())
    return {**configured, **{q: assigned[r] for q, r in raw.items()}}


def _log_mapping(model: Model) -> None:
    for s in model.entity_sets:
        renamed = [f"{p.column}->{p.name}" for p in s.entity_type.properties if p.name != p.column]
        log.info(
            "entity set %s <- %s.%s key=(%s)%s%s",
            s.name,
            s.schema,
            s.table,
            ",".join(s.entity_type.key),
            " read-only" if not s.writable else "",
            f" renamed: {', '.join(renamed)}" if renamed else "",
        )
