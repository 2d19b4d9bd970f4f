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

from odata.errors import CatalogError
from odata.model import Constraint, EntitySet, EntityType, Generation, Model, Property
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


@dataclass(frozen=True)
class SetOptions:
    """Per-relation settings from `[[odata.sets]]`."""

    table: str  # schema.table
    name: str | None = None
    key: tuple[str, ...] | None = None
    read_only: bool = False
    change_tracking: bool | None = None  # None: the [odata] default


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
       b.typname as type, bn.nspname as type_schema, t.typtype::text as typtype,
       case when t.typtype = 'd' then t.typtypmod else a.atttypmod end as typmod,
       a.attnotnull as notnull,
       -- 's' (stored; 'v' virtual from PostgreSQL 18) for `GENERATED ALWAYS AS (...)`
       a.attgenerated::text <> '' as generated,
       a.attidentity::text as identity,  -- 'a' ALWAYS, 'd' BY DEFAULT
       coalesce(pg_get_expr(d.adbin, d.adrelid) like 'nextval(%', false) as serial,
       case when b.typtype = 'e' then array(
           select e.enumlabel::text from pg_enum e where e.enumtypid = b.oid
           order by e.enumsortorder) end as enum_values
from pg_attribute a
join pg_type t on t.oid = a.atttypid
-- a domain is exposed as its base type
join pg_type b on b.oid = case when t.typtype = 'd' then t.typbasetype else t.oid end
join pg_namespace bn on bn.oid = b.typnamespace
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
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


# The rules PostgreSQL names when a write breaks one, per exposed relation: table constraints,
# unique indexes (also those without a constraint, and the ones of each partition, which carry
# the partition's own names) and the CHECKs of the domains its columns use.
_CONSTRAINTS_SQL = """
with recursive tree(root, oid) as (
    select r, r from unnest($1::oid[]) as r
    union all
    select tree.root, i.inhrelid from tree join pg_inherits i on i.inhparent = tree.oid
)
select con.conrelid as oid, con.conname::text as name, con.contype::text as kind,
       array(select a.attname::text from unnest(con.conkey) with ordinality as k(num, ord)
             join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.num
             order by k.ord) as columns,
       fn.nspname::text as ref_schema, fc.relname::text as ref_table, null::text as domain
from pg_constraint con
left join pg_class fc on fc.oid = con.confrelid
left join pg_namespace fn on fn.oid = fc.relnamespace
where con.conrelid = any($1::oid[]) and con.contype in ('p', 'u', 'c', 'f', 'x')
union all
select tree.root, ic.relname::text, case when i.indisprimary then 'p' else 'u' end,
       array(select a.attname::text from unnest(i.indkey) with ordinality as k(num, ord)
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.num
             order by k.ord)
       -- the columns an expression (`lower(email)`) uses are recorded as its dependencies
       || array(select a.attname::text from pg_depend d
                join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
                where d.classid = 'pg_class'::regclass and d.objid = i.indexrelid
                  and d.refclassid = 'pg_class'::regclass and d.refobjsubid > 0
                  and d.refobjsubid <> all(i.indkey::int2[])
                order by a.attnum),
       null, null, null
from tree
join pg_index i on i.indrelid = tree.oid and i.indisunique
join pg_class ic on ic.oid = i.indexrelid
where not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid
                  and c.conrelid = tree.root)
union all
select a.attrelid, con.conname::text, 'd', array[a.attname::text], null, null, t.typname::text
from pg_attribute a
join pg_type t on t.oid = a.atttypid and t.typtype = 'd'
join pg_constraint con on con.contypid = t.oid and con.contype = 'c'
where a.attrelid = any($1::oid[]) and a.attnum > 0 and not a.attisdropped
"""

_CONSTRAINT_KINDS: dict[str, Any] = {
    "p": "primary key",
    "u": "unique",
    "c": "check",
    "f": "foreign key",
    "x": "exclusion",
    "d": "domain",
}


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
    change_tracking: bool = False,
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
    rules: dict[int, list[Any]] = {}
    for r in await conn.fetch(_CONSTRAINTS_SQL, oids):
        rules.setdefault(r["oid"], []).append(r)

    built: list[
        tuple[str, str, str, bool, list[Property], tuple[str, ...], SetOptions | None, int]
    ] = []
    for rel in relations:
        qualified = f"{rel['schema']}.{rel['table']}"
        opt = options.get(qualified)
        is_view = rel["kind"] in ("v", "m", "f")
        if is_view and opt is not None and opt.change_tracking:
            raise CatalogError(
                f'[[odata.sets]] table = "{qualified}": change_tracking needs a table, and this'
                " is a view; track the tables it reads instead, or remove change_tracking"
            )
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
        built.append(
            (rel["schema"], rel["table"], qualified, is_view, props, key_columns, opt, rel["oid"])
        )

    set_names = _set_names([(b[2], b[1], b[6]) for b in built])
    entity_sets = []
    for schema, table, qualified, is_view, props, key_columns, opt, oid in built:
        by_column = {p.column: p for p in props}
        not_null = {c["column"] for c in columns.get(oid, []) if c["notnull"]}
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
                tracked=not is_view
                and (
                    opt.change_tracking
                    if opt is not None and opt.change_tracking is not None
                    else change_tracking
                ),
                nullable_key=not set(key_columns) <= not_null,
                constraints=_constraints(rules.get(oid, []), by_column, set_names),
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
            type_schema=c["type_schema"],
            generation=_generation(c),
            enum_values=tuple(c["enum_values"] or ()),
        )
        for c, edm, max_length, precision, scale in kept
    ]


def _constraints(
    rows: list[Any], by_column: dict[str, Property], set_names: dict[str, str]
) -> tuple[Constraint, ...]:
    """The relation's rules in OData terms: physical column names become property names."""
    out = []
    for r in rows:
        columns = r["columns"] or []
        props = tuple(by_column[c].name for c in columns if c in by_column)
        if len(props) != len(columns):
            props = ()  # a column the model leaves out: the rule cannot be stated in OData terms
        target = f"{r['ref_schema']}.{r['ref_table']}" if r["ref_table"] else None
        out.append(
            Constraint(
                name=r["name"],
                kind=_CONSTRAINT_KINDS[r["kind"]],
                properties=props,
                references=set_names.get(target) if target else None,
                domain=r["domain"],
            )
        )
    return tuple(out)


def _generation(c: Any) -> Generation:
    if c["generated"] or c["identity"] == "a":
        return "computed"
    if c["identity"] == "d" or c["serial"]:
        return "default"
    return "client"


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
