"""Compile a query plan into ONE parametrised SQL statement whose result is the response body.

PostgreSQL builds the JSON (`json_agg` over a LIMITed, ordered subquery) and the count in the same
round trip; Python only frames it. Identifiers are quoted by `odata.ident`, every value is a bound
parameter, and OData's two-valued null semantics are translated exactly (see `_cond`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from odata import etags
from odata.catalog import is_native
from odata.ident import ident, qualified
from odata.model import EntitySet, Property
from odata.plan import (
    Arith,
    Col,
    CollectionPlan,
    Compare,
    CountPlan,
    EntityPlan,
    Func,
    InList,
    Lit,
    Logic,
    Not,
    SortKey,
    TExpr,
)
from odata.write import Values, WritePlan

# Edm type -> the PostgreSQL type a literal of it is bound as.
_BIND_TYPES = {
    "Edm.Byte": "int8",
    "Edm.SByte": "int8",
    "Edm.Int16": "int8",
    "Edm.Int32": "int8",
    "Edm.Int64": "int8",
    "Edm.Decimal": "numeric",
    "Edm.Single": "float8",
    "Edm.Double": "float8",
    "Edm.String": "text",
    "Edm.Boolean": "bool",
    "Edm.Date": "date",
    "Edm.DateTimeOffset": "timestamptz",
    "Edm.TimeOfDay": "time",
    "Edm.Guid": "uuid",
    "Edm.Binary": "bytea",
    "Edm.Duration": "interval",
}

# Types whose JSON needs an `@odata.type` annotation in odata.metadata=full (JSON Format §4.5.3).
_IMPLICIT_TYPES = frozenset({"Edm.String", "Edm.Boolean", "Edm.Int32", "Edm.Double"})

_OPS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}
_EXTRACT = {"year": "year", "month": "month", "day": "day", "hour": "hour", "minute": "minute"}


def relation(entity_set: EntitySet) -> str:
    return qualified(entity_set.schema, entity_set.table)


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    ieee754: bool = False
    full: bool = False  # odata.metadata=full annotations


class Params:
    """The bound values of one statement; `bind` returns the placeholder, cast to its type."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def bind(self, value: Any, pg_type: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{pg_type}"


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def column(prop: Property) -> str:
    """The column as a value of the property's Edm type."""
    col = f"t.{ident(prop.column)}"
    if prop.db_type == "money":
        return f"{col}::numeric"
    if not is_native(prop.db_type):
        return f"{col}::text"
    return col


def _pg_type(expr: TExpr) -> str:
    if isinstance(expr, Col):
        return (
            expr.prop.db_type
            if is_native(expr.prop.db_type) and expr.prop.db_type != "money"
            else ("numeric" if expr.prop.db_type == "money" else "text")
        )
    return _BIND_TYPES.get(expr.edm, "text")


class Compiler:
    """SQL fragments for typed plan expressions: values, conditions, ORDER BY, outputs."""

    def __init__(self, params: Params) -> None:
        self.p = params

    # -- values --------------------------------------------------------------------------------

    def value(self, e: TExpr) -> str:
        match e:
            case Col(prop=prop):
                return column(prop)
            case Lit(value=value, edm=edm, db_type=db_type):
                if value is None:
                    return "NULL"
                return self.p.bind(value, db_type or _BIND_TYPES.get(edm, "text"))
            case Arith(op="neg", left=left):
                return f"(-{self.value(left)})"
            case Arith(op="divby", left=left, right=right):
                assert right is not None
                return f"({self.value(left)}::numeric / {self.value(right)})"
            case Arith(op=op, left=left, right=right, edm=edm):
                assert right is not None
                lhs, rhs = self.value(left), self.value(right)
                if edm == "Edm.Int64" and op != "div":
                    lhs = f"{lhs}::int8"  # avoid int4 overflow where OData has 64-bit integers
                if op == "mod" and edm == "Edm.Double":
                    return f"mod({lhs}::numeric, {rhs}::numeric)::float8"
                return f"({lhs} {_ARITH[op]} {rhs})"
            case Func():
                return self._func_value(e)
        # A boolean expression used as a value: three-valued, like OData's.
        return (
            f"(CASE WHEN {self.cond(e, True)} THEN true WHEN {self.cond(e, False)} THEN false END)"
        )

    def _func_value(self, f: Func) -> str:
        args = [self.value(a) for a in f.args]
        name = f.name
        if f.edm == "Edm.Boolean":
            return self._predicate(f)
        if name in _EXTRACT:
            return f"extract({_EXTRACT[name]} from {args[0]})::int4"
        simple = {
            "length": "char_length({0})",
            "indexof": "(strpos({0}, {1}) - 1)",
            "tolower": "lower({0})",
            "toupper": "upper({0})",
            "trim": "btrim({0})",
            "concat": "({0} || {1})",
            "second": "floor(extract(second from {0}))::int4",
            "fractionalseconds": "((extract(microseconds from {0})::int8 % 1000000) / 1000000.0)",
            "date": "({0})::date",
            "time": "({0})::time",
            "totaloffsetminutes": "(CASE WHEN {0} IS NULL THEN NULL ELSE 0 END)",
            "now": "now()",
            "maxdatetime": "'9999-12-31 23:59:59.999999+00'::timestamptz",
            "mindatetime": "'0001-01-01 00:00:00+00'::timestamptz",
            "round": "round({0})",
            "floor": "floor({0})",
            "ceiling": "ceil({0})",
        }
        if name == "substring":
            start = f"({args[1]})::int4 + 1"
            if len(args) == 3:
                return f"substr({args[0]}, greatest({start}, 1), greatest(({args[2]})::int4, 0))"
            return f"substr({args[0]}, greatest({start}, 1))"
        return simple[name].format(*args)

    def _predicate(self, f: Func) -> str:
        text, needle = f.args[0], f.args[1]
        subject = self.value(text)
        if f.name == "matchespattern":
            return f"({subject} ~ {self.value(needle)})"
        if isinstance(needle, Lit) and isinstance(needle.value, str):
            escaped = escape_like(needle.value)
            pattern = {
                "contains": f"%{escaped}%",
                "startswith": f"{escaped}%",
                "endswith": f"%{escaped}",
            }[f.name]
            op = "ILIKE" if f.case_insensitive else "LIKE"
            return f"({subject} {op} {self.p.bind(pattern, 'text')})"
        other = self.value(needle)
        if f.case_insensitive:
            subject, other = f"lower({subject})", f"lower({other})"
        if f.name == "contains":
            return f"(strpos({subject}, {other}) > 0)"
        if f.name == "startswith":
            return f"starts_with({subject}, {other})"
        return f"(right({subject}, char_length({other})) = {other})"

    # -- conditions ----------------------------------------------------------------------------

    def cond(self, e: TExpr, want: bool) -> str:
        """SQL that is TRUE exactly when `e` evaluates to `want` under OData's rules.

        OData's boolean operators are three-valued only where a null reaches them through a
        function or a boolean property; comparisons are two-valued (`null eq null` is true,
        `Prop ne 'x'` is true where Prop is null). Emitting "TRUE iff true" and "TRUE iff false"
        separately keeps `not` exact and leaves plain `Prop eq value` as index-friendly `=`.
        """
        match e:
            case Lit(value=value):
                return "true" if value is want else "false"
            case Col():
                return self.value(e) if want else f"(NOT {self.value(e)})"
            case Not(operand=operand):
                return self.cond(operand, not want)
            case Logic(op=op, operands=operands):
                joiner = " AND " if (op == "and") == want else " OR "
                return "(" + joiner.join(self.cond(o, want) for o in operands) + ")"
            case Compare(op=op, left=left, right=right):
                return self._compare(op, left, right, want)
            case InList(left=left, items=items):
                positive = self._in(left, items)
                return positive if want else f"({positive}) IS NOT TRUE"
            case Func():
                predicate = self._predicate(e)
                return predicate if want else f"(NOT {predicate})"
        raise AssertionError(f"not a boolean expression: {e!r}")

    def _compare(self, op: str, left: TExpr, right: TExpr, want: bool) -> str:
        if op in ("eq", "ne"):
            equal = (op == "eq") == want
            return self._equal(left, right) if equal else self._not_equal(left, right)
        if left.edm == "null" or right.edm == "null":
            return "false" if want else "true"
        positive = f"({self.value(left)} {_OPS[op]} {self.value(right)})"
        if want:
            return positive
        if not left.nullable and not right.nullable:
            return f"(NOT {positive})"
        return f"({positive} IS NOT TRUE)"

    def _bool_literal_side(self, left: TExpr, right: TExpr) -> tuple[TExpr, bool] | None:
        for a, b in ((left, right), (right, left)):
            if isinstance(b, Lit) and isinstance(b.value, bool) and a.edm == "Edm.Boolean":
                return a, b.value
        return None

    def _equal(self, left: TExpr, right: TExpr) -> str:
        if left.edm == "null" and right.edm == "null":
            return "true"
        if left.edm == "null" or right.edm == "null":
            other = right if left.edm == "null" else left
            return f"({self.value(other)} IS NULL)"
        boolean = self._bool_literal_side(left, right)
        if boolean is not None:
            return self.cond(*boolean)  # `contains(...) eq true` is the predicate itself
        if not left.nullable or not right.nullable:
            # One side is never null: SQL's `=` is NULL only where OData says false.
            return f"({self.value(left)} = {self.value(right)})"
        return f"({self.value(left)} IS NOT DISTINCT FROM {self.value(right)})"

    def _not_equal(self, left: TExpr, right: TExpr) -> str:
        if left.edm == "null" and right.edm == "null":
            return "false"
        if left.edm == "null" or right.edm == "null":
            other = right if left.edm == "null" else left
            return f"({self.value(other)} IS NOT NULL)"
        boolean = self._bool_literal_side(left, right)
        if boolean is not None:
            expr, literal = boolean
            return f"({self.cond(expr, literal)} IS NOT TRUE)"
        if not left.nullable and not right.nullable:
            return f"({self.value(left)} <> {self.value(right)})"
        return f"({self.value(left)} IS DISTINCT FROM {self.value(right)})"

    def _in(self, left: TExpr, items: tuple[Lit, ...]) -> str:
        subject = self.value(left)
        values = [self.value(i) for i in items if i.value is not None]
        parts = []
        if values:
            parts.append(f"{subject} IN ({', '.join(values)})")
        if any(i.value is None for i in items):
            parts.append(f"{subject} IS NULL")
        return "(" + " OR ".join(parts) + ")" if parts else "false"

    # -- ordering and keyset ---------------------------------------------------------------------

    def order_by(self, order: tuple[SortKey, ...]) -> str:
        items = []
        for key in order:
            sql = self.value(key.expr)
            # OData sorts nulls first ascending and last descending: PostgreSQL's opposite.
            if key.descending:
                items.append(f"{sql} DESC" + (" NULLS LAST" if key.expr.nullable else ""))
            else:
                items.append(f"{sql} ASC" + (" NULLS FIRST" if key.expr.nullable else ""))
        return ", ".join(items)

    def after(self, order: tuple[SortKey, ...], values: tuple[str | None, ...]) -> str:
        exprs = [self.value(k.expr) for k in order]
        types = [_pg_type(k.expr) for k in order]
        uniform = (
            all(not k.expr.nullable for k in order) and len({k.descending for k in order}) == 1
        )
        if uniform and all(v is not None for v in values):
            bound = [
                f"CAST({self.p.bind(v, 'text')} AS {t})" for v, t in zip(values, types, strict=True)
            ]
            op = "<" if order[0].descending else ">"
            if len(exprs) == 1:
                return f"{exprs[0]} {op} {bound[0]}"
            return f"({', '.join(exprs)}) {op} ({', '.join(bound)})"
        alternatives = []
        for i, key in enumerate(order):
            terms = [self._same(exprs[j], types[j], values[j]) for j in range(i)]
            terms.append(self._beyond(exprs[i], types[i], values[i], key))
            alternatives.append("(" + " AND ".join(terms) + ")")
        return "(" + " OR ".join(alternatives) + ")"

    def _same(self, expr: str, pg_type: str, value: str | None) -> str:
        if value is None:
            return f"{expr} IS NULL"
        return f"{expr} = CAST({self.p.bind(value, 'text')} AS {pg_type})"

    def _beyond(self, expr: str, pg_type: str, value: str | None, key: SortKey) -> str:
        if value is None:
            return "false" if key.descending else f"{expr} IS NOT NULL"
        bound = f"CAST({self.p.bind(value, 'text')} AS {pg_type})"
        if key.descending:
            return (
                f"({expr} < {bound} OR {expr} IS NULL)"
                if key.expr.nullable
                else f"{expr} < {bound}"
            )
        return f"{expr} > {bound}"

    # -- output --------------------------------------------------------------------------------

    def outputs(self, entity_set: EntitySet, props: tuple[Property, ...], fmt: OutputFormat) -> str:
        cols: list[str] = []
        if fmt.full:
            etype = entity_set.entity_type
            cols.append(
                f"{self.p.bind('#' + 'r2sf.' + etype.name, 'text')} AS {ident('@odata.type')}"
            )
            link = self._key_text(entity_set)
            cols.append(f"{link} AS {ident('@odata.id')}")
            cols.append(f"{link} AS {ident('@odata.editLink')}")
        for prop in props:
            if fmt.full and prop.edm_type not in _IMPLICIT_TYPES:
                annotation = self.p.bind("#" + prop.edm_type.removeprefix("Edm."), "text")
                cols.append(f"{annotation} AS {ident(prop.name + '@odata.type')}")
            cols.append(f"{output_value(prop, fmt)} AS {ident(prop.name)}")
        return ", ".join(cols)

    def _key_text(self, entity_set: EntitySet) -> str:
        etype = entity_set.entity_type
        parts = []
        for prop in etype.key_properties:
            col = column(prop)
            text = (
                f"{col}::text"
                if prop.edm_type != "Edm.String"
                else (f"'''' || replace({col}, '''', '''''') || ''''")
            )
            parts.append(text if len(etype.key) == 1 else f"'{prop.name}=' || {text}")
        joined = " || ',' || ".join(parts)
        return f"({self.p.bind(entity_set.name + '(', 'text')} || {joined} || ')')"


def output_value(prop: Property, fmt: OutputFormat) -> str:
    """The column as it must appear in JSON (OData JSON Format §7.1)."""
    col = column(prop)
    edm = prop.edm_type
    if fmt.ieee754 and edm in ("Edm.Int64", "Edm.Decimal"):
        return f"{col}::text"
    if edm == "Edm.DateTimeOffset":
        utc = col if prop.db_type == "timestamp" else f"({col} AT TIME ZONE 'UTC')"
        # Naive timestamps are taken as UTC; infinite ones have no OData form and read as null.
        return f"(CASE WHEN isfinite({col}) THEN (to_json({utc}) #>> '{{}}') || 'Z' END)"
    if edm in ("Edm.Double", "Edm.Single"):
        return (
            f"(CASE WHEN {col} = 'Infinity' THEN to_json('INF'::text) "
            f"WHEN {col} = '-Infinity' THEN to_json('-INF'::text) "
            f"WHEN {col} = 'NaN' THEN to_json('NaN'::text) ELSE to_json({col}) END)"
        )
    if edm == "Edm.Binary":
        return f"rtrim(translate(encode({col}, 'base64'), E'+/\\n', '-_'), '=')"
    if edm == "Edm.Date":
        return f"(CASE WHEN isfinite({col}) THEN {col} END)"
    return col


def _where(compiler: Compiler, entity_set: EntitySet, where: TExpr | None) -> str:
    cond = compiler.cond(where, True) if where is not None else "true"
    if entity_set.nullable_key:  # a row without a key is not an entity
        by_name = {p.name: p for p in entity_set.entity_type.properties}
        keys = " AND ".join(
            f"t.{ident(by_name[k].column)} IS NOT NULL" for k in entity_set.entity_type.key
        )
        cond = f"{keys} AND {cond}"
    return cond


def collection(
    plan: CollectionPlan, fmt: OutputFormat, *, with_count: bool = True, cut: bool = False
) -> Statement:
    """Columns: body (JSON array text), count (or NULL), rows (on this page, exact when more is
    true), last (JSON array of the last row's sort values, on a server-driven page that has a
    next one), more (bool: rows exist after this page, within the page's LIMIT + 1).

    The page is `limit` rows, or fewer where their JSON would exceed `max_bytes` (one row at
    least). Checking the finished page costs nothing measurable, while cutting it takes a running
    sum over the rows (a window, ~40 % more for a small page): so the statement without `cut`
    answers body NULL for a page over the budget, and the one with `cut` keeps the rows that fit.
    Rows are turned into JSON only after the LIMIT, so a sort stays a top-N sort and `$skip` rows
    cost no JSON.
    """
    p = Params()
    c = Compiler(p)
    rel = relation(plan.entity_set)
    outputs = c.outputs(plan.entity_set, plan.select, fmt)
    where = _where(c, plan.entity_set, plan.where)
    counted = plan.count and with_count
    count = f"(SELECT count(*) FROM {rel} AS t WHERE {where})" if counted else "NULL::int8"
    conditions = where
    if plan.after is not None:
        conditions = f"{where} AND {c.after(plan.order, plan.after)}"
    order = c.order_by(plan.order)
    limit = p.bind(plan.limit, "int8")
    offset = p.bind(plan.offset, "int8")
    source = f"{rel} AS t CROSS JOIN LATERAL (SELECT {outputs}) AS r"
    if plan.paged:
        # One row more than the page, to know whether another page follows, and each row's sort
        # values, to continue after the last. An array, not json_build_array(): functions take
        # at most 100 arguments.
        keys = ", ".join(f"({c.value(k.expr)})::text" for k in plan.order)
        columns, rows = f"r, ARRAY[{keys}] AS k", f"{limit} + 1"
    else:
        columns, rows = "r", limit
    page = f"SELECT {columns} FROM {source} WHERE {conditions} ORDER BY {order} "
    page += f"LIMIT {rows} OFFSET {offset}"
    if not cut:
        # The aggregate appears twice but is computed once (PostgreSQL shares equal ones). A
        # NULL body asks for the statement with `cut` (one row alone over the budget too).
        kept = f" FILTER (WHERE n <= {limit})" if plan.paged else ""
        agg = f"string_agg(row_to_json(r)::text, ','){kept}"
        over = p.bind(plan.max_bytes - 2, "int8")  # the brackets
        if plan.paged:
            last = f"array_to_json(max(k) FILTER (WHERE n = {limit}))::text"
            more = f"count(*) > {limit}"
            rows_from = f"(SELECT r, k, row_number() OVER () AS n FROM ({page}) AS q) AS numbered"
        else:
            last, more, rows_from = "NULL::text", "false", f"({page}) AS q"
        sql = (
            f"SELECT CASE WHEN octet_length({agg}) > {over} THEN NULL "
            f"ELSE coalesce('[' || {agg} || ']', '[]') END AS body, {count} AS count, "
            f"{limit} AS rows, {last} AS last, {more} AS more FROM {rows_from}"
        )
        return Statement(sql, tuple(p.values))
    # A running sum of the rows' JSON bytes (`size`, the array so far with its commas and
    # brackets) keeps the prefix of rows that fits, one row at least. A row is the last kept one
    # when its successor (`next_size`) does not fit or does not exist.
    budget = p.bind(plan.max_bytes, "int8")
    size = "sum(octet_length(j)) OVER w + row_number() OVER w + 1"
    follows = f"coalesce(n < {limit} AND next_size <= {budget}, false)"
    last, k = "NULL::text", "NULL::text[]"
    if plan.paged:
        last, k = f"array_to_json(max(k) FILTER (WHERE NOT {follows}))::text", "q.k"
    sql = (
        "SELECT coalesce('[' || string_agg(j, ',') || ']', '[]') AS body, "
        f"{count} AS count, count(*) AS rows, {last} AS last, "
        f"coalesce(bool_or(NOT {follows} AND next_size IS NOT NULL), false) AS more "
        f"FROM (SELECT j, k, row_number() OVER w AS n, {size} AS size, "
        f"{size} + 1 + lead(octet_length(j)) OVER w AS next_size "
        # OFFSET 0 keeps `j` one computed column: inlined, row_to_json would run twice a row.
        f"FROM (SELECT row_to_json(q.r)::text AS j, {k} AS k FROM ({page}) AS q OFFSET 0) AS s "
        f"WINDOW w AS (ROWS UNBOUNDED PRECEDING)) AS x WHERE (n = 1 OR size <= {budget}) "
        f"AND n <= {limit}"
    )
    return Statement(sql, tuple(p.values))


def count(plan: CountPlan) -> Statement:
    p = Params()
    where = _where(Compiler(p), plan.entity_set, plan.where)
    return Statement(
        f"SELECT count(*) FROM {relation(plan.entity_set)} AS t WHERE {where}", tuple(p.values)
    )


def _key_condition(c: Compiler, plan: EntityPlan) -> str:
    return " AND ".join(f"{column(prop)} = {c.value(lit)}" for prop, lit in plan.key)


def entity(plan: EntityPlan, fmt: OutputFormat) -> Statement:
    """Columns: body (the entity as a JSON object text), etag (the opaque part of its ETag, a
    hash of the row); no row when the key matches nothing."""
    p = Params()
    c = Compiler(p)
    outputs = c.outputs(plan.entity_set, plan.select, fmt)
    key = _key_condition(c, plan)
    sql = (
        f"SELECT to_json(r)::text, {etags.row_hash('t')} FROM {relation(plan.entity_set)} AS t "
        f"CROSS JOIN LATERAL (SELECT {outputs}) AS r WHERE {key}"
    )
    return Statement(sql, tuple(p.values))


def property_value(plan: EntityPlan, fmt: OutputFormat) -> Statement:
    """Columns: json (the value as JSON text), raw (text form, or bytes for Binary)."""
    assert plan.prop is not None
    p = Params()
    c = Compiler(p)
    prop = plan.prop
    key = _key_condition(c, plan)
    raw = column(prop) if prop.edm_type == "Edm.Binary" else f"{column(prop)}::text"
    if prop.edm_type == "Edm.DateTimeOffset":
        raw = f"({output_value(prop, fmt)})"
    sql = (
        f"SELECT to_json({output_value(prop, fmt)})::text AS json, {raw} AS raw "
        f"FROM {relation(plan.entity_set)} AS t WHERE {key}"
    )
    return Statement(sql, tuple(p.values))


def delta(
    plan: CollectionPlan,
    fmt: OutputFormat,
    *,
    since: str,
    until: str | None,
    after: str | None,
    limit: int,
) -> Statement:
    """The keys changed between two snapshots, with each row as it is now (Protocol §11.3).

    Columns: key (JSON array text), present (the row still exists), body (the entity as JSON
    text when it exists and matches the plan's $filter/$search, else NULL). At most `limit` + 1
    rows, in key order after `after`. Changes are the log rows (odata/changes.py) whose
    transaction `since` did not see and `until` did (or, without `until`, the reading
    transaction's own snapshot sees: it only sees committed ones).
    """
    p = Params()
    c = Compiler(p)
    es = plan.entity_set
    outputs = c.outputs(es, plan.select, fmt)
    matches = c.cond(plan.where, True) if plan.where is not None else "true"
    snapshot = f"({p.bind(since, 'text')})::pg_snapshot"
    conditions = [
        f"x.relid = ({p.bind(relation(es), 'text')})::regclass",
        "x.key IS NOT NULL",
        "NOT x.key @> '[null]'",  # a row without a key is not an entity
        f"x.xid >= pg_snapshot_xmin({snapshot})",
        f"NOT pg_visible_in_snapshot(x.xid, {snapshot})",
    ]
    if until is not None:
        conditions.append(f"pg_visible_in_snapshot(x.xid, ({p.bind(until, 'text')})::pg_snapshot)")
    if after is not None:
        conditions.append(f"x.key > {p.bind(after, 'jsonb')}")
    join = " AND ".join(
        f"t.{ident(prop.column)} = CAST(c.key->>{i} AS {ident(prop.db_type)})"
        for i, prop in enumerate(es.entity_type.key_properties)
    )
    sql = (
        f"WITH c AS (SELECT DISTINCT x.key FROM r2sf.changes AS x WHERE {' AND '.join(conditions)}"
        f" ORDER BY x.key LIMIT {p.bind(limit + 1, 'int8')}) "
        "SELECT c.key::text AS key, t.ctid IS NOT NULL AS present, "
        f"CASE WHEN t.ctid IS NOT NULL AND ({matches}) THEN row_to_json(r)::text END AS body "
        f"FROM c LEFT JOIN {relation(es)} AS t ON {join} "
        f"LEFT JOIN LATERAL (SELECT {outputs}) AS r ON true ORDER BY c.key"
    )
    return Statement(sql, tuple(p.values))


# -- writes: compile a WritePlan (odata/write.py) ----------------------------------------------


def probes(vals: Values) -> Iterator[tuple[Property, Statement]]:
    """One statement per written value that casts it exactly as the write does: the first one
    PostgreSQL refuses names the property behind a refused write (its error names none)."""
    for prop, value in vals.items:
        if value is not None:
            p = Params()
            yield prop, Statement(f"SELECT {cast_value(p, prop, value)}", tuple(p.values))


def cast_value(p: Params, prop: Property, value: Any) -> str:
    """A written value, bound as text (bytes for Binary) and cast to the column's type."""
    if value is None:
        return "NULL"
    if prop.edm_type == "Edm.Binary":
        return p.bind(value, "bytea")
    text = p.bind(value, "text")
    if prop.db_type == "timestamp":
        # A DateTimeOffset with an offset is converted to UTC, the zone naive columns are kept in.
        return f"(CAST({text} AS timestamptz) AT TIME ZONE 'UTC')"
    return f"CAST({text} AS {column_type(prop)})"


def column_type(prop: Property) -> str:
    """The column's type, schema-qualified, as a CAST target."""
    # The catalogue's type name is enough to cast to: facets (length, precision) are enforced by
    # the column itself when the value is stored. Qualified, so a type outside the search_path
    # (an enum in the table's own schema) is found.
    if not prop.db_type:
        return "text"
    if not prop.type_schema:
        return ident(prop.db_type)
    return f"{ident(prop.type_schema)}.{ident(prop.db_type)}"


def precondition_holds(p: Params, pre: etags.Precondition) -> str:
    """SQL true when the row `t` satisfies If-Match and If-None-Match, evaluated on the row the
    write locks, so no change can slip in between the check and the write."""
    terms = []
    row = etags.row_hash("t")
    if isinstance(pre.if_match, tuple):
        terms.append(f"{row} = ANY({p.bind(list(pre.if_match), 'text[]')})")
    if pre.if_none_match == "*":
        terms.append("false")  # the entity exists wherever this is evaluated
    elif isinstance(pre.if_none_match, tuple):
        terms.append(f"{row} <> ALL({p.bind(list(pre.if_none_match), 'text[]')})")
    return " AND ".join(terms) or "true"


def write(plan: WritePlan, fmt: OutputFormat) -> Statement:
    """The one statement of a write; its columns are those of `insert`, `update` or `delete`."""
    if plan.kind == "create":
        return insert(plan.entity_set, plan.values, fmt)
    if plan.kind == "delete":
        return delete(plan.entity_set, plan.key, plan.precondition)
    return update(plan.entity_set, plan.key, plan.values, replace=plan.kind == "replace",
                  precondition=plan.precondition)  # fmt: skip


def insert(entity_set: EntitySet, vals: Values, fmt: OutputFormat) -> Statement:
    """Columns: body (the created entity as JSON text), etag (its row hash)."""
    p = Params()
    c = Compiler(p)
    target = f"{relation(entity_set)} AS t"
    if vals.items:
        cols = ", ".join(ident(prop.column) for prop, _ in vals.items)
        exprs = ", ".join(cast_value(p, prop, v) for prop, v in vals.items)
        insert_sql = f"INSERT INTO {target} ({cols}) VALUES ({exprs}) RETURNING *"
    else:
        insert_sql = f"INSERT INTO {target} DEFAULT VALUES RETURNING *"
    outputs = c.outputs(entity_set, entity_set.entity_type.properties, fmt)
    # `changed` has the table's columns in order, so its row text is the table row's.
    sql = (
        f"WITH changed AS ({insert_sql}) SELECT to_json(r)::text, {etags.row_hash('t')} "
        f"FROM changed AS t CROSS JOIN LATERAL (SELECT {outputs}) AS r"
    )
    return Statement(sql, tuple(p.values))


def update(
    entity_set: EntitySet,
    key: tuple[tuple[Property, Lit], ...],
    vals: Values,
    *,
    replace: bool,
    precondition: etags.Precondition = etags.NONE,
) -> Statement:
    """UPDATE by key, guarded by the precondition. Columns: etag (the entity's row hash after
    the write; NULL when nothing was written), exists (whether the key names an entity).
    The values were checked by `odata.write.plan_write`.

    `replace` (PUT) resets the properties the body leaves out to their defaults, except those
    the database generates: a sequence would renumber them."""
    p = Params()
    c = Compiler(p)
    key_names = {prop.name for prop, _ in key}
    given = {prop.name for prop, _ in vals.items}  # a changed key was refused by plan_write
    sets = [
        f"{ident(prop.column)} = {cast_value(p, prop, v)}"
        for prop, v in vals.items
        if prop.name not in key_names
    ]
    if replace:
        sets += [
            f"{ident(prop.column)} = DEFAULT"
            for prop in entity_set.entity_type.properties
            if prop.name not in key_names and prop.name not in given and prop.generation == "client"
        ]
    where = " AND ".join(f"{column(prop)} = {c.value(lit)}" for prop, lit in key)
    holds = precondition_holds(p, precondition)
    target = f"{relation(entity_set)} AS t"
    row = etags.row_hash("t")
    if not sets:  # nothing to change: still 404 for a missing entity, 412 for a failed condition
        return Statement(
            f"SELECT CASE WHEN {holds} THEN {row} END, true FROM {target} WHERE {where}",
            tuple(p.values),
        )
    sql = (
        f"WITH changed AS (UPDATE {target} SET {', '.join(sets)} WHERE {where} AND {holds} "
        f"RETURNING {row} AS etag) "
        f"SELECT (SELECT etag FROM changed), EXISTS (SELECT 1 FROM {target} WHERE {where})"
    )
    return Statement(sql, tuple(p.values))


def delete(
    entity_set: EntitySet,
    key: tuple[tuple[Property, Lit], ...],
    precondition: etags.Precondition = etags.NONE,
) -> Statement:
    """DELETE by key, guarded by the precondition. Columns: deleted, exists (as `update`)."""
    p = Params()
    c = Compiler(p)
    where = " AND ".join(f"{column(prop)} = {c.value(lit)}" for prop, lit in key)
    holds = precondition_holds(p, precondition)
    target = f"{relation(entity_set)} AS t"
    sql = (
        f"WITH changed AS (DELETE FROM {target} WHERE {where} AND {holds} RETURNING 1) "
        f"SELECT EXISTS (SELECT 1 FROM changed), EXISTS (SELECT 1 FROM {target} WHERE {where})"
    )
    return Statement(sql, tuple(p.values))
