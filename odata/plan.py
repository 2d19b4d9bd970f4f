"""Resolve a parsed request against the model into a typed, validated query plan.

Every name is looked up here (an unknown one is a 400 that suggests the closest name), every
expression is type-checked, literals are coerced to the types they are compared with, and paging
(`$top`, `$skip`, server-driven pages, `$skiptoken`) is decided. No SQL is written here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import difflib
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from odata import ast
from odata.errors import (
    BadRequest,
    InvalidQueryOption,
    NotImplementedFeature,
    QuerySyntaxError,
    ResourceNotFound,
    TypeMismatch,
    UnknownProperty,
)
from odata.model import EntitySet, Model, Property
from odata.request import ODataRequest, QueryOptions

INTEGRAL = frozenset({"Edm.Byte", "Edm.SByte", "Edm.Int16", "Edm.Int32", "Edm.Int64"})
NUMERIC = INTEGRAL | {"Edm.Decimal", "Edm.Single", "Edm.Double"}
TEMPORAL = frozenset({"Edm.Date", "Edm.DateTimeOffset"})
# PostgreSQL's sort time grows with the square of the sort keys (1,000 computed keys over a few
# thousand rows take a minute); list views sort by one or two columns.
MAX_SORT_KEYS = 32
# The largest `$top` answered in one page: Salesforce's client-driven paging asks for up to 2,000
# rows plus one to see whether there are more, and pages on by `$skip`, so a shorter page with a
# nextLink would make it skip rows (spec §4). Only the byte budget can cut such a page.
MAX_CLIENT_TOP = 2001
# The byte budget of one page's JSON rows when the settings give none: Salesforce refuses
# responses over 8 MB (spec §7), and the envelope (context, count, nextLink) needs room too.
MAX_PAGE_BYTES = 6_000_000


# --- the typed expression IR ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Col:
    prop: Property

    @property
    def edm(self) -> str:
        return self.prop.edm_type

    @property
    def nullable(self) -> bool:
        return self.prop.nullable


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any
    edm: str  # "null" for null
    db_type: str | None = None  # bind as this PostgreSQL type (e.g. a column's `timestamp`)

    @property
    def nullable(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # eq ne gt ge lt le
    left: TExpr
    right: TExpr
    edm = "Edm.Boolean"
    nullable = False  # OData comparisons are two-valued, even with null operands


@dataclass(frozen=True, slots=True)
class Logic:
    """An n-ary `and`/`or`: Salesforce sends IN lists as `or` chains of hundreds of terms."""

    op: str  # and, or
    operands: tuple[TExpr, ...]
    edm = "Edm.Boolean"

    @property
    def nullable(self) -> bool:
        return any(o.nullable for o in self.operands)


@dataclass(frozen=True, slots=True)
class Not:
    operand: TExpr
    edm = "Edm.Boolean"

    @property
    def nullable(self) -> bool:
        return self.operand.nullable


@dataclass(frozen=True, slots=True)
class Arith:
    op: str  # add sub mul div divby mod neg
    left: TExpr
    right: TExpr | None
    edm: str

    @property
    def nullable(self) -> bool:
        return self.left.nullable or (self.right is not None and self.right.nullable)


@dataclass(frozen=True, slots=True)
class Func:
    name: str
    args: tuple[TExpr, ...]
    edm: str
    nullable: bool
    case_insensitive: bool = False


@dataclass(frozen=True, slots=True)
class InList:
    left: TExpr
    items: tuple[Lit, ...]
    edm = "Edm.Boolean"
    nullable = False


TExpr = Col | Lit | Compare | Logic | Not | Arith | Func | InList


# --- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    expr: TExpr
    descending: bool


@dataclass(frozen=True, slots=True)
class CollectionPlan:
    entity_set: EntitySet
    select: tuple[Property, ...]  # output properties, in $metadata order
    select_context: tuple[str, ...] | None  # the select list as it appears in @odata.context
    where: TExpr | None
    order: tuple[SortKey, ...]  # always ends with the key
    limit: int  # rows on this page at most
    offset: int
    count: bool
    after: tuple[str | None, ...] | None  # keyset position (text form of each sort value)
    paged: bool  # server-driven: a nextLink (keyset) follows a full page
    wanted: int | None  # rows the client still wants from this page on ($top); None = all
    shape: str  # fingerprint of filter/order/search, bound into every skiptoken
    max_bytes: int  # the page ends before its rows' JSON exceeds this (one row at least)


@dataclass(frozen=True, slots=True)
class CountPlan:
    entity_set: EntitySet
    where: TExpr | None


@dataclass(frozen=True, slots=True)
class EntityPlan:
    entity_set: EntitySet
    key: tuple[tuple[Property, Lit], ...]
    select: tuple[Property, ...]
    select_context: tuple[str, ...] | None
    prop: Property | None = None  # /Prop or /Prop/$value
    raw_value: bool = False


QueryPlan = CollectionPlan | CountPlan | EntityPlan


@dataclass(frozen=True, slots=True)
class Settings:
    page_size: int = 1000
    case_insensitive: bool = True
    max_page_bytes: int = MAX_PAGE_BYTES


def plan(
    request: ODataRequest, model: Model, settings: Settings
) -> CollectionPlan | CountPlan | EntityPlan:
    resource = request.resource
    entity_set = _entity_set(model, resource.entity_set or "")
    opts = request.options
    checker = _Checker(entity_set, settings, opts.aliases)
    if resource.kind == "count":
        return CountPlan(entity_set, _where(checker, opts))
    if resource.kind in ("entity", "property", "value"):
        assert resource.key is not None
        key = resolve_key(entity_set, resource.key)
        select, context = _select(entity_set, opts.select)
        prop = None
        if resource.prop is not None:
            prop = entity_set.entity_type.prop(resource.prop)
            if prop is None:  # a path segment names no resource: 404, unlike a bad $filter
                raise ResourceNotFound(_unknown(entity_set, resource.prop), target=resource.prop)
        return EntityPlan(entity_set, key, select, context, prop, resource.kind == "value")
    return _collection(entity_set, opts, checker, settings)


def _entity_set(model: Model, name: str) -> EntitySet:
    found = model.entity_set(name)
    if found is None:
        names = [s.name for s in model.entity_sets]
        guess = closest(name, names)
        hint = f"; did you mean '{guess}'?" if guess else ""
        raise ResourceNotFound(f"no entity set named '{name}'{hint}", target=name)
    return found


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate `name` most likely meant (any case), for "did you mean" hints; or None."""
    lowered = {c.lower(): c for c in candidates}
    if name.lower() in lowered:
        return lowered[name.lower()]
    found = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[found[0]] if found else None


def _unknown(entity_set: EntitySet, name: str) -> str:
    guess = closest(name, [p.name for p in entity_set.entity_type.properties])
    hint = f"; did you mean '{guess}'?" if guess else ""
    return f"'{name}' is not a property of {entity_set.name}{hint}"


def _where(checker: _Checker, opts: QueryOptions) -> TExpr | None:
    where = None
    if opts.filter is not None:
        where = checker.boolean(opts.filter, "$filter")
    if opts.search is not None:
        search = checker.search(opts.search)
        where = search if where is None else Logic("and", (where, search))
    return where


def _select(
    entity_set: EntitySet, items: tuple[ast.SelectItem, ...] | None
) -> tuple[tuple[Property, ...], tuple[str, ...] | None]:
    props = entity_set.entity_type.properties
    if items is None:
        return props, None
    chosen: set[str] = set()
    context: list[str] = []
    for item in items:
        if item.segments == ("*",):
            chosen.update(p.name for p in props)
            context.append("*")
            continue
        if len(item.segments) != 1:
            raise NotImplementedFeature(
                f"$select path '{'/'.join(item.segments)}': this service has no complex or "
                "navigation properties",
                target="$select",
            )
        name = item.segments[0]
        if entity_set.entity_type.prop(name) is None:
            raise UnknownProperty("$select: " + _unknown(entity_set, name), target=name)
        if name not in chosen:
            context.append(name)
        chosen.add(name)
    return tuple(p for p in props if p.name in chosen), tuple(context)


def _collection(
    entity_set: EntitySet, opts: QueryOptions, checker: _Checker, settings: Settings
) -> CollectionPlan:
    select, context = _select(entity_set, opts.select)
    order = _order(entity_set, opts.orderby, checker)
    shape = _shape(opts)
    page = settings.page_size
    # A client-driven page ($top up to the larger of MAX_CLIENT_TOP and the page size) is
    # answered whole, at `$skip`; otherwise pages of `page_size` rows follow one another by
    # keyset. Either may end early at the byte budget, with a nextLink to the rest.
    # Paging: (rows on this page, offset, keyset position, server-driven?, rows wanted)
    paging: tuple[int, int, tuple[str | None, ...] | None, bool, int | None]
    if opts.skiptoken is not None:
        position, wanted = decode_token(opts.skiptoken, shape, len(order))
        rows = page if wanted is None else min(page, wanted)
        paging = (rows, 0, position, True, wanted)
    elif opts.top is not None and opts.top <= max(page, MAX_CLIENT_TOP):
        paging = (opts.top, opts.skip or 0, None, False, opts.top)
    else:
        paging = (page, opts.skip or 0, None, True, opts.top)
    limit, offset, after, paged, wanted = paging
    return CollectionPlan(
        entity_set=entity_set,
        select=select,
        select_context=context,
        where=_where(checker, opts),
        order=order,
        limit=limit,
        offset=offset,
        count=bool(opts.count),
        after=after,
        paged=paged,
        wanted=wanted,
        shape=shape,
        max_bytes=settings.max_page_bytes,
    )


def _order(
    entity_set: EntitySet, items: tuple[ast.OrderItem, ...], checker: _Checker
) -> tuple[SortKey, ...]:
    if len(items) > MAX_SORT_KEYS:
        raise InvalidQueryOption(
            f"$orderby has {len(items)} items; at most {MAX_SORT_KEYS} are allowed",
            target="$orderby",
        )
    keys: list[SortKey] = []
    seen: set[str] = set()
    for item in items:
        expr = checker.value(item.expr, "$orderby")
        if isinstance(expr, Lit):
            raise InvalidQueryOption(
                "$orderby: ordering by a constant has no effect", target="$orderby"
            )
        if expr.edm == "Edm.Binary":
            raise InvalidQueryOption(
                "$orderby: Binary properties cannot be ordered", target="$orderby"
            )
        if isinstance(expr, Col):
            if expr.prop.name in seen:
                continue
            seen.add(expr.prop.name)
        keys.append(SortKey(expr, item.descending))
    # The key is always the last sort key: pages are stable and keyset paging is exact.
    for prop in entity_set.entity_type.key_properties:
        if prop.name not in seen:
            keys.append(SortKey(Col(prop), False))
    return tuple(keys)


def _shape(opts: QueryOptions) -> str:
    text = "\x00".join(opts.raw.get(k, "") for k in ("filter", "orderby", "search"))
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


def encode_token(shape: str, values: list[str | None], remaining: int | None) -> str:
    payload = json.dumps({"s": shape, "k": values, "n": remaining}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(token: str, shape: str, width: int) -> tuple[tuple[str | None, ...], int | None]:
    bad = InvalidQueryOption(
        "$skiptoken is not one this service issued for this query: follow @odata.nextLink "
        "exactly as given",
        target="$skiptoken",
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("s") != shape:
        raise bad
    values, remaining = data.get("k"), data.get("n")
    if not isinstance(values, list) or len(values) != width:
        raise bad
    if not all(v is None or isinstance(v, str) for v in values):
        raise bad
    if remaining is not None and (not isinstance(remaining, int) or remaining < 1):
        raise bad
    return tuple(values), remaining


# --- keys -------------------------------------------------------------------------------------


def resolve_key(entity_set: EntitySet, key: ast.KeyPredicate) -> tuple[tuple[Property, Lit], ...]:
    etype = entity_set.entity_type
    key_props = etype.key_properties
    names = ", ".join(etype.key)
    if len(key.values) != len(key_props):
        raise BadRequest(
            f"{entity_set.name} has key ({names}): give {len(key_props)} key value(s)", target="key"
        )
    if len(key.values) == 1 and key.values[0][0] is None:
        return ((key_props[0], coerce_key(key_props[0], key.values[0][1])),)
    given: dict[str, ast.Literal] = {}
    for name, literal in key.values:
        if name is None or etype.prop(name) is None or name not in etype.key:
            raise BadRequest(
                f"key predicate names '{name}'; {entity_set.name} has key ({names})", target="key"
            )
        given[name] = literal
    return tuple((p, coerce_key(p, given[p.name])) for p in key_props)


def resource_key_text(key: tuple[tuple[Property, Lit], ...]) -> str:
    """The key predicate as written in a URL: `1`, `'S-1'`, `OrderID=1,LineNo=2`."""
    single = len(key) == 1
    out = []
    for prop, lit in key:
        # Only strings are quoted: Int64 keys arrive as strings under IEEE754Compatible.
        value = str(lit.value)
        text = (
            f"'{value.replace(chr(39), chr(39) * 2)}'" if prop.edm_type == "Edm.String" else value
        )
        out.append(text if single else f"{prop.name}={text}")
    return ",".join(out)


def coerce_key(prop: Property, literal: ast.Literal) -> Lit:
    if literal.value is None:
        raise BadRequest(f"key {prop.name} cannot be null", target="key")
    if literal.edm_type == "segment":  # key-as-segment: unquoted text, typed by the key
        text = str(literal.value)
        if prop.edm_type == "Edm.String":
            return Lit(text, "Edm.String")
        from odata.parser import parse_literal

        try:
            literal = parse_literal(text)
        except (QuerySyntaxError, NotImplementedFeature):
            raise BadRequest(
                f"'{text}' is not a valid {prop.edm_type} key value", target="key"
            ) from None
    try:
        return _coerce(Col(prop), Lit(literal.value, literal.edm_type))
    except TypeMismatch:
        raise BadRequest(
            f"key {prop.name} is {prop.edm_type}; {_show(literal.value)} is {literal.edm_type}",
            target="key",
        ) from None


# --- type checking ----------------------------------------------------------------------------

# name -> (min args, max args, argument categories, result type or None = same as first argument)
_STR = "string"
_NUM = "number"
_DATE = "date"  # Date or DateTimeOffset
_TIME = "time"  # DateTimeOffset or TimeOfDay
_DTO = "datetimeoffset"
_FUNCTIONS: dict[str, tuple[int, int, tuple[str, ...], str | None]] = {
    "contains": (2, 2, (_STR, _STR), "Edm.Boolean"),
    "startswith": (2, 2, (_STR, _STR), "Edm.Boolean"),
    "endswith": (2, 2, (_STR, _STR), "Edm.Boolean"),
    "substringof": (2, 2, (_STR, _STR), "Edm.Boolean"),
    "matchespattern": (2, 2, (_STR, _STR), "Edm.Boolean"),
    "length": (1, 1, (_STR,), "Edm.Int32"),
    "indexof": (2, 2, (_STR, _STR), "Edm.Int32"),
    "substring": (2, 3, (_STR, _NUM, _NUM), "Edm.String"),
    "tolower": (1, 1, (_STR,), "Edm.String"),
    "toupper": (1, 1, (_STR,), "Edm.String"),
    "trim": (1, 1, (_STR,), "Edm.String"),
    "concat": (2, 2, (_STR, _STR), "Edm.String"),
    "year": (1, 1, (_DATE,), "Edm.Int32"),
    "month": (1, 1, (_DATE,), "Edm.Int32"),
    "day": (1, 1, (_DATE,), "Edm.Int32"),
    "hour": (1, 1, (_TIME,), "Edm.Int32"),
    "minute": (1, 1, (_TIME,), "Edm.Int32"),
    "second": (1, 1, (_TIME,), "Edm.Int32"),
    "fractionalseconds": (1, 1, (_TIME,), "Edm.Decimal"),
    "date": (1, 1, (_DTO,), "Edm.Date"),
    "time": (1, 1, (_DTO,), "Edm.TimeOfDay"),
    "totaloffsetminutes": (1, 1, (_DTO,), "Edm.Int32"),
    "now": (0, 0, (), "Edm.DateTimeOffset"),
    "maxdatetime": (0, 0, (), "Edm.DateTimeOffset"),
    "mindatetime": (0, 0, (), "Edm.DateTimeOffset"),
    "round": (1, 1, (_NUM,), None),
    "floor": (1, 1, (_NUM,), None),
    "ceiling": (1, 1, (_NUM,), None),
}
_UNSUPPORTED_FUNCTIONS = frozenset(
    {
        "cast",
        "isof",
        "geo.distance",
        "geo.length",
        "geo.intersects",
        "hassubset",
        "hassubsequence",
        "case",
        "totalseconds",
    }
)
_CATEGORY_TYPES = {
    _STR: frozenset({"Edm.String"}),
    _NUM: NUMERIC,
    _DATE: TEMPORAL,
    _TIME: frozenset({"Edm.DateTimeOffset", "Edm.TimeOfDay"}),
    _DTO: frozenset({"Edm.DateTimeOffset"}),
}


class _Checker:
    def __init__(
        self, entity_set: EntitySet, settings: Settings, aliases: dict[str, ast.Literal]
    ) -> None:
        self.entity_set = entity_set
        self.settings = settings
        self.aliases = aliases

    def boolean(self, node: ast.Expr, option: str) -> TExpr:
        expr = self.value(node, option)
        if expr.edm != "Edm.Boolean":
            raise TypeMismatch(
                f"{option} must be a boolean expression, not {expr.edm}", target=option
            )
        return expr

    def value(self, node: ast.Expr, option: str) -> TExpr:
        match node:
            case ast.Literal(value=value, edm_type=edm):
                return Lit(value, edm)
            case ast.PropertyPath(segments=segments):
                return self._property(segments, option)
            case ast.Alias(name=name):
                if name not in self.aliases:
                    raise BadRequest(
                        f"{option}: parameter alias @{name} has no value in the query string",
                        target=name,
                    )
                lit = self.aliases[name]
                return Lit(lit.value, lit.edm_type)
            case ast.BinaryOp(op="and" | "or" as op):
                return self._logic(op, node, option)
            case ast.BinaryOp(op=op, left=left, right=right):
                return self._binary(op, self.value(left, option), self.value(right, option), option)
            case ast.UnaryOp(op="not", operand=operand):
                inner = self.value(operand, option)
                if inner.edm != "Edm.Boolean":
                    raise TypeMismatch(
                        f"{option}: 'not' needs a boolean operand, not {inner.edm}", target=option
                    )
                return Not(inner)
            case ast.UnaryOp(op="neg", operand=operand):
                inner = self.value(operand, option)
                if inner.edm not in NUMERIC:
                    raise TypeMismatch(
                        f"{option}: '-' needs a number, not {inner.edm}", target=option
                    )
                return Arith("neg", inner, None, inner.edm)
            case ast.In(left=left, items=items):
                return self._in(self.value(left, option), items, option)
            case ast.Call(name=name, args=args):
                return self._call(name, args, option)
            case ast.LambdaExpr():
                raise NotImplementedFeature(
                    f"{option}: lambda operators (any/all) are not supported: this service has no collections",
                    target=option,
                )
            case _:
                raise NotImplementedFeature(
                    f"{option}: this kind of expression is not supported", target=option
                )

    def _property(self, segments: tuple[str, ...], option: str) -> Col:
        prop = self.entity_set.entity_type.prop(segments[0])
        if prop is None:
            raise UnknownProperty(
                f"{option}: " + _unknown(self.entity_set, segments[0]), target=segments[0]
            )
        if len(segments) > 1:
            raise UnknownProperty(
                f"{option}: '{'/'.join(segments)}': {segments[0]} is a {prop.edm_type} and has no members",
                target="/".join(segments),
            )
        return Col(prop)

    def _logic(self, op: str, node: ast.BinaryOp, option: str) -> TExpr:
        # Walk the chain without recursion: `a or b or c ...` arrives as a left-deep tree.
        operands: list[TExpr] = []
        stack: list[ast.Expr] = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, ast.BinaryOp) and item.op == op:
                stack.extend((item.right, item.left))
                continue
            typed = self.value(item, option)
            if typed.edm != "Edm.Boolean":
                raise TypeMismatch(
                    f"{option}: '{op}' needs boolean operands, not {typed.edm}", target=option
                )
            operands.append(typed)
        if op == "or":
            as_in = _or_chain_as_in(operands)
            if as_in is not None:
                return as_in
        return Logic(op, tuple(operands))

    def _binary(self, op: str, left: TExpr, right: TExpr, option: str) -> TExpr:
        if op in ("eq", "ne", "gt", "ge", "lt", "le"):
            left, right = _unify(left, right, op, option)
            if op not in ("eq", "ne") and left.edm in ("Edm.Binary",):
                raise TypeMismatch(
                    f"{option}: Binary values can only be compared with eq and ne", target=option
                )
            return Compare(op, left, right)
        if op in ("add", "sub", "mul", "div", "divby", "mod"):
            for side in (left, right):
                if side.edm not in NUMERIC and side.edm != "null":
                    if side.edm in TEMPORAL or side.edm == "Edm.Duration":
                        raise NotImplementedFeature(
                            f"{option}: date and duration arithmetic is not supported",
                            target=option,
                        )
                    raise TypeMismatch(
                        f"{option}: '{op}' needs numbers, not {side.edm}", target=option
                    )
            return Arith(op, left, right, _arith_type(op, left.edm, right.edm))
        if op == "has":
            raise NotImplementedFeature(
                f"{option}: 'has' needs enumeration types, which this service does not have",
                target=option,
            )
        raise NotImplementedFeature(f"{option}: operator '{op}' is not supported", target=option)

    def _in(self, left: TExpr, items: tuple[ast.Expr, ...], option: str) -> InList:
        if not items:
            raise BadRequest(f"{option}: 'in' needs at least one value", target=option)
        lits: list[Lit] = []
        for item in items:
            value = self.value(item, option)
            if not isinstance(value, Lit):
                raise NotImplementedFeature(
                    f"{option}: 'in' lists must hold literal values", target=option
                )
            _, coerced = _unify(left, value, "in", option)
            assert isinstance(coerced, Lit)
            lits.append(coerced)
        return InList(left, tuple(lits))

    def _call(self, name: str, args: tuple[ast.Expr, ...], option: str) -> TExpr:
        name = name.lower()
        if name in _UNSUPPORTED_FUNCTIONS or name.startswith("geo."):
            raise NotImplementedFeature(
                f"{option}: function {name}() is not supported by this service", target=name
            )
        spec = _FUNCTIONS.get(name)
        if spec is None:
            guess = closest(name, list(_FUNCTIONS))
            hint = f"; did you mean {guess}()?" if guess else ""
            raise BadRequest(f"{option}: unknown function '{name}'{hint}", target=name)
        low, high, categories, result = spec
        if not low <= len(args) <= high:
            count = str(low) if low == high else f"{low} or {high}"
            raise BadRequest(
                f"{option}: {name}() takes {count} argument(s), got {len(args)}", target=name
            )
        typed = [self.value(a, option) for a in args]
        if (
            name == "substringof"
        ):  # OData 2.0 order: substringof('x', Prop) means contains(Prop, 'x')
            name, typed = "contains", [typed[1], typed[0]]
        for i, arg in enumerate(typed):
            allowed = _CATEGORY_TYPES[categories[i]]
            if arg.edm == "null":
                continue
            if isinstance(arg, Lit) and categories[i] == _NUM and arg.edm in NUMERIC:
                continue
            if arg.edm not in allowed:
                raise TypeMismatch(
                    f"{option}: argument {i + 1} of {name}() must be {' or '.join(sorted(allowed))}, "
                    f"not {arg.edm}",
                    target=name,
                )
        edm = result or typed[0].edm
        nullable = any(a.nullable for a in typed)
        return Func(name, tuple(typed), edm, nullable, self.settings.case_insensitive)

    def search(self, node: ast.SearchExpr) -> TExpr:
        strings = [p for p in self.entity_set.entity_type.properties if p.edm_type == "Edm.String"]
        match node:
            case ast.SearchTerm(text=text):
                if not strings:
                    return Lit(False, "Edm.Boolean")  # nothing to search in: nothing matches
                return Logic(
                    "or",
                    tuple(
                        Compare(
                            "eq",
                            Func(
                                "contains",
                                (Col(prop), Lit(text, "Edm.String")),
                                "Edm.Boolean",
                                prop.nullable,
                                self.settings.case_insensitive,
                            ),
                            Lit(True, "Edm.Boolean"),
                        )
                        for prop in strings
                    ),
                )
            case ast.SearchNot(operand=operand):
                return Not(self.search(operand))
            case ast.SearchBinary(op=op, left=left, right=right):
                return Logic(op, (self.search(left), self.search(right)))
        raise NotImplementedFeature("$search: unsupported expression", target="$search")


def _or_chain_as_in(operands: list[TExpr]) -> InList | None:
    """`P eq 'a' or P eq 'b' or ...` (how Salesforce writes IN) as one index-friendly `IN`."""
    column: Property | None = None
    items: list[Lit] = []
    for o in operands:
        if not (isinstance(o, Compare) and o.op == "eq"):
            return None
        col, lit = (o.left, o.right) if isinstance(o.left, Col) else (o.right, o.left)
        if not isinstance(col, Col) or not isinstance(lit, Lit):
            return None
        if column is not None and col.prop != column:
            return None
        column = col.prop
        items.append(lit)
    if column is None or len(items) < 2:
        return None
    return InList(Col(column), tuple(items))


def _arith_type(op: str, left: str, right: str) -> str:
    types = {left, right} - {"null"}
    if op == "divby" or "Edm.Decimal" in types:
        return "Edm.Decimal" if not types & {"Edm.Double", "Edm.Single"} else "Edm.Double"
    if types & {"Edm.Double", "Edm.Single"}:
        return "Edm.Double"
    return "Edm.Int64"


def _unify(left: TExpr, right: TExpr, op: str, option: str) -> tuple[TExpr, TExpr]:
    """Make two compared operands type-compatible, coercing literals towards the other side."""
    if left.edm == "null" or right.edm == "null":
        return left, right
    if isinstance(right, Lit) and not isinstance(left, Lit):
        return left, _coerce(left, right, op, option)
    if isinstance(left, Lit) and not isinstance(right, Lit):
        return _coerce(right, left, op, option), right
    if _compatible(left.edm, right.edm):
        return left, right
    raise TypeMismatch(
        f"{option}: cannot compare {left.edm} with {right.edm} using '{op}'", target=option
    )


def _compatible(a: str, b: str) -> bool:
    return a == b or (a in NUMERIC and b in NUMERIC) or (a in TEMPORAL and b in TEMPORAL)


def _coerce(target: TExpr, lit: Lit, op: str = "eq", option: str = "$filter") -> Lit:
    """The literal as a value of `target`'s type, or a TypeMismatch that says what to write."""
    want, have, value = target.edm, lit.edm, lit.value
    db_type = target.prop.db_type if isinstance(target, Col) else None
    if value is None:
        return lit
    if want in NUMERIC and have in NUMERIC:
        if want in INTEGRAL and have in INTEGRAL:
            return Lit(value, "Edm.Int64")
        if want in ("Edm.Double", "Edm.Single") or have in ("Edm.Double", "Edm.Single"):
            return Lit(float(value), "Edm.Double")
        return Lit(
            decimal.Decimal(value) if not isinstance(value, decimal.Decimal) else value,
            "Edm.Decimal",
        )
    if want == have and want not in TEMPORAL:
        return Lit(value, want)
    try:
        if want == "Edm.Date":
            if have == "Edm.String":
                return Lit(dt.date.fromisoformat(value), "Edm.Date")
            if have == "Edm.Date":
                return lit
            if have == "Edm.DateTimeOffset":
                return Lit(value.astimezone(dt.UTC), "Edm.DateTimeOffset")
        if want == "Edm.DateTimeOffset":
            if have == "Edm.String":
                value, have = (
                    dt.datetime.fromisoformat(value.replace("Z", "+00:00")),
                    "Edm.DateTimeOffset",
                )
                if value.tzinfo is None:
                    value = value.replace(tzinfo=dt.UTC)
            if have == "Edm.Date":
                value, have = dt.datetime.combine(value, dt.time(), dt.UTC), "Edm.DateTimeOffset"
            if have == "Edm.DateTimeOffset":
                if db_type == "timestamp":
                    # Naive timestamps are UTC; binding a naive value keeps the column's index usable.
                    return Lit(value.astimezone(dt.UTC).replace(tzinfo=None), want, "timestamp")
                # In UTC here, so a value beyond year 9999 fails as a TypeMismatch, not later.
                return Lit(value.astimezone(dt.UTC), want)
        if want == "Edm.Guid" and have == "Edm.String":
            return Lit(uuid.UUID(value), "Edm.Guid")
        if want == "Edm.TimeOfDay" and have == "Edm.String":
            return Lit(dt.time.fromisoformat(value), "Edm.TimeOfDay")
        if want == "Edm.String" and have == "Edm.Guid":
            return Lit(str(value), "Edm.String")
        if want == "Edm.Binary" and have == "Edm.Binary":
            return lit
    except (ValueError, TypeError, OverflowError):
        raise TypeMismatch(
            f"{option}: '{value}' is not a valid {want} value", target=option
        ) from None
    name = target.prop.name if isinstance(target, Col) else "the expression"
    hint = " (quote strings: 'text')" if want == "Edm.String" else ""
    raise TypeMismatch(
        f"{option}: {name} is {want} and cannot be compared with the {have} value {_show(value)}{hint}",
        target=name,
    )


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, bytes | str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
