"""Writes from Salesforce's writable external objects: create, update, replace, delete.

Validates a JSON entity body against the entity type before the database sees it: unknown
names, wrong JSON types, values outside the declared facets (MaxLength, Precision, Scale, the
range of each integer type), enum labels and text PostgreSQL cannot store are 400s that name the
property and the rule. It then compiles ONE parametrised INSERT/UPDATE/DELETE; values are bound
as text and cast by PostgreSQL to the column type, so its own input rules decide the rest (a
value they refuse is traced back to its property with `probes`). Refusals by the table's rules
are translated in `odata.violations`.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from odata import etags
from odata.catalog import is_native
from odata.errors import InvalidBody, MethodNotAllowed
from odata.model import EntitySet, Property
from odata.plan import Lit, _closest
from odata.sql import OutputFormat, Statement, _Compiler, _Params, column, ident, relation

WriteKind = Literal["create", "update", "replace", "delete"]
READ_ONLY_ALLOW = ("GET", "HEAD")

# The range of each integer type (OData CSDL §4.4 primitive types; PostgreSQL int2/int4/int8).
_INTEGER_RANGES = {
    "Edm.Byte": (0, 2**8 - 1),
    "Edm.SByte": (-(2**7), 2**7 - 1),
    "Edm.Int16": (-(2**15), 2**15 - 1),
    "Edm.Int32": (-(2**31), 2**31 - 1),
    "Edm.Int64": (-(2**63), 2**63 - 1),
}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,40}")  # IEEE754Compatible clients send Int64 as text
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?")
_SPECIAL_FLOATS = {"INF": "Infinity", "-INF": "-Infinity", "NaN": "NaN"}
_BOUNDED_TEXT = frozenset({"varchar", "bpchar"})  # MaxLength is the column's own limit
# Wide enough for any boundary of Precision <= 38 with Scale <= Precision, exactly.
_EXACT = decimal.Context(prec=100)

# What a value PostgreSQL's input rules refuse must look like, by Edm type.
_EXPECTED = {
    "Edm.Date": "a date like 2024-05-01",
    "Edm.DateTimeOffset": "a date and time like 2024-05-01T10:00:00Z",
    "Edm.TimeOfDay": "a time of day like 13:20:00",
    "Edm.Guid": "a GUID like 0f8fad5b-d9cb-469f-a165-70867728950e",
    "Edm.Boolean": "true or false",
    "Edm.Binary": "base64url-encoded bytes",
}


@dataclass(frozen=True, slots=True)
class Values:
    """Property -> value as bound SQL text (or bytes for Binary; None for null)."""

    items: tuple[tuple[Property, Any], ...]


def check_writable(entity_set: EntitySet) -> None:
    if not entity_set.writable:
        what = "a view" if entity_set.is_view else "configured read-only"
        raise MethodNotAllowed(
            f"{entity_set.name} is {what}: it cannot be written", allow=READ_ONLY_ALLOW
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_float=decimal.Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = _printable(exc)
        if "integer string conversion" in reason:  # Python's guard against huge integers
            reason = "a number in it has more than 4300 digits"
        raise InvalidBody(f"the request body is not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise InvalidBody("the request body must be a JSON object with the entity's properties")
    return data


def values(entity_set: EntitySet, body: dict[str, Any]) -> Values:
    etype = entity_set.entity_type
    out: list[tuple[Property, Any]] = []
    for name, value in body.items():
        if name.startswith("@") or "@" in name:
            continue  # instance annotations (`@odata.type`, `Name@odata.type`) carry no data
        prop = etype.prop(name)
        if prop is None:
            guess = _closest(name, [p.name for p in etype.properties])
            hint = f"; did you mean '{guess}'?" if guess else ""
            shown = _printable(name)
            raise InvalidBody(
                f"'{shown}' is not a property of {entity_set.name}{hint}", target=shown
            )
        if prop.computed:
            # OData 4.01 Protocol §11.4.2 (create): properties computed by the service
            # (Core.Computed) "can be omitted and MUST be ignored if included in the request";
            # §11.4.3 (update): for read-only properties, including computed ones, "the service
            # MUST ignore that value when applying the update". Salesforce sends every field.
            continue
        out.append((prop, _bindable(prop, value)))
    return Values(tuple(out))


def _invalid(prop: Property, rule: str) -> InvalidBody:
    return InvalidBody(f"{prop.name}: {rule}", target=prop.name)


def _bindable(prop: Property, value: Any) -> Any:
    if value is None:
        if not prop.nullable:
            raise _invalid(prop, "cannot be null (the property is not nullable)")
        return None
    edm = prop.edm_type
    wrong = _invalid(prop, f"must be {edm}; got {_json_kind(value)} {_short(value)}")
    if edm == "Edm.Boolean":
        if not isinstance(value, bool):
            raise wrong
        return "true" if value else "false"
    if edm in _INTEGER_RANGES:
        return _integer(prop, value, wrong)
    if edm in ("Edm.Decimal", "Edm.Double", "Edm.Single"):
        return _number(prop, value, wrong)
    if edm == "Edm.Binary":
        if not isinstance(value, str):
            raise wrong
        return _binary(prop, value)
    if edm == "Edm.String" and not is_native(prop.db_type):
        # Exposed through its text form (json, arrays, enums, intervals, ...): a JSON value
        # other than a string is taken as the JSON document for a json column.
        text = value if isinstance(value, str) else _json_text(value)
        if prop.enum_values and text not in prop.enum_values:
            raise _invalid(prop, f"must be one of {', '.join(prop.enum_values)}")
        return _text(prop, text)
    if not isinstance(value, str):
        raise wrong
    text = _text(prop, value)
    limit = prop.max_length
    # PostgreSQL stores a longer value when the excess is only spaces, cut to the limit.
    if prop.db_type in _BOUNDED_TEXT and limit is not None and value[limit:].strip(" "):
        raise _invalid(prop, f"at most {limit} characters (got {len(value)})")
    return text


def _integer(prop: Property, value: Any, wrong: InvalidBody) -> str:
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        number: int | decimal.Decimal = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral():
        number = value  # `2.0`; compared as a Decimal so `1E+999999` never becomes an int
    else:
        raise wrong
    low, high = _INTEGER_RANGES[prop.edm_type]
    if not low <= number <= high:
        raise _invalid(prop, f"must be between {low} and {high} ({prop.edm_type})")
    return str(int(number))


def _number(prop: Property, value: Any, wrong: InvalidBody) -> str:
    edm = prop.edm_type
    if isinstance(value, str) and edm != "Edm.Decimal" and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
        number = decimal.Decimal(value)  # IEEE754Compatible clients send Decimal as text
    elif isinstance(value, int) and not isinstance(value, bool):
        number = decimal.Decimal(value)
    elif isinstance(value, decimal.Decimal) and value.is_finite():
        number = value
    else:
        raise wrong
    if edm != "Edm.Decimal":
        _check_float(prop, number)
        return str(number)
    _check_digits(prop, number)
    # Positional notation once the digits are known to be bounded: `money` reads no exponent.
    return format(number, "f") if prop.precision is not None else str(number)


def _check_digits(prop: Property, number: decimal.Decimal) -> None:
    """Precision and Scale as PostgreSQL applies them: the value is rounded to Scale decimals
    and must then have at most Precision - Scale digits before the decimal point."""
    precision, scale = prop.precision, prop.scale or 0
    if precision is None:
        return
    whole = precision - scale
    # The smallest magnitude that rounds (half away from zero) to 10^whole.
    limit = _EXACT.subtract(
        _EXACT.power(10, whole), _EXACT.multiply(5, _EXACT.power(10, -scale - 1))
    )
    if abs(number) >= limit:
        raise _invalid(
            prop,
            f"at most {whole} digits before the decimal point (Precision {precision}, "
            f"Scale {scale})",
        )


def _check_float(prop: Property, number: decimal.Decimal) -> None:
    single = prop.edm_type == "Edm.Single"
    try:
        as_float = float(number)
        stored = struct.unpack("<f", struct.pack("<f", as_float))[0] if single else as_float
    except OverflowError:
        stored = float("inf")
    # PostgreSQL refuses what overflows to infinity or underflows to zero.
    if stored in (float("inf"), float("-inf")) or (stored == 0 and number != 0):
        what = "single" if single else "double"
        raise _invalid(prop, f"out of range for a {what}-precision number ({prop.edm_type})")


def _binary(prop: Property, value: str) -> bytes:
    # base64url (OData JSON §7.1); the standard alphabet is accepted too.
    standard = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(prop, "must be " + _EXPECTED["Edm.Binary"]) from None


def _text(prop: Property, text: str) -> str:
    if "\x00" in text:
        raise _invalid(prop, "text cannot contain the NUL character (U+0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(prop, "not valid Unicode text (a lone surrogate)") from None
    return text


def _json_text(value: Any) -> str:
    """JSON text of a parsed body value; decimals keep the digits they were sent with."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_json_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | decimal.Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _short(value: Any) -> str:
    text = _printable(_json_text(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _printable(text: object) -> str:
    """Client text for a message: lone surrogates cannot be encoded in a response."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def bad_value(prop: Property) -> InvalidBody:
    """The error for a value PostgreSQL's input rules refused (found by `probes`)."""
    expected = _EXPECTED.get(prop.edm_type)
    if expected is None and prop.db_type in ("json", "jsonb"):
        expected = "JSON text PostgreSQL can store (without \\u0000 or lone surrogates)"
    elif expected is None and prop.db_type.startswith("_"):
        expected = "an array in PostgreSQL's text form, like {a,b}"
    elif expected is None and prop.db_type == "interval":
        expected = "an interval like '1 day 02:00:00' or 'P1DT2H'"
    if expected is None:
        return _invalid(prop, f"not a valid value for this property ({prop.edm_type})")
    return _invalid(prop, f"must be {expected}")


def probes(vals: Values) -> Iterator[tuple[Property, Statement]]:
    """One statement per written value that casts it exactly as the write does: the first one
    PostgreSQL refuses names the property behind a refused write (its error names none)."""
    for prop, value in vals.items:
        if value is not None:
            p = _Params()
            yield prop, Statement(f"SELECT {_cast(p, prop, value)}", tuple(p.values))


def _cast(p: _Params, prop: Property, value: Any) -> str:
    if value is None:
        return "NULL"
    if prop.edm_type == "Edm.Binary":
        return p.bind(value, "bytea")
    text = p.bind(value, "text")
    if prop.db_type == "timestamp":
        # A DateTimeOffset with an offset is converted to UTC, the zone naive columns are kept in.
        return f"(CAST({text} AS timestamptz) AT TIME ZONE 'UTC')"
    return f"CAST({text} AS {_column_type(prop)})"


def _column_type(prop: Property) -> str:
    # The catalogue's type name is enough to cast to: facets (length, precision) are enforced by
    # the column itself when the value is stored. Qualified, so a type outside the search_path
    # (an enum in the table's own schema) is found.
    if not prop.db_type:
        return "text"
    if not prop.type_schema:
        return ident(prop.db_type)
    return f"{ident(prop.type_schema)}.{ident(prop.db_type)}"


def _precondition(p: _Params, pre: etags.Precondition) -> str:
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


def insert(entity_set: EntitySet, vals: Values, fmt: OutputFormat) -> Statement:
    """Columns: body (the created entity as JSON text), etag (its row hash)."""
    p = _Params()
    c = _Compiler(p)
    target = f"{relation(entity_set)} AS t"
    if vals.items:
        cols = ", ".join(ident(prop.column) for prop, _ in vals.items)
        exprs = ", ".join(_cast(p, prop, v) for prop, v in vals.items)
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

    `replace` (PUT) resets the properties the body leaves out to their defaults, except those
    the database generates: a sequence would renumber them."""
    p = _Params()
    c = _Compiler(p)
    key_names = {prop.name for prop, _ in key}
    given = {prop.name: (prop, v) for prop, v in vals.items}
    for prop, lit in key:
        if prop.name in given and str(given[prop.name][1]) != str(lit.value):
            raise _invalid(prop, "is the key and cannot be changed")
    sets = [
        f"{ident(prop.column)} = {_cast(p, prop, v)}"
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
    holds = _precondition(p, precondition)
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
    p = _Params()
    c = _Compiler(p)
    where = " AND ".join(f"{column(prop)} = {c.value(lit)}" for prop, lit in key)
    holds = _precondition(p, precondition)
    target = f"{relation(entity_set)} AS t"
    sql = (
        f"WITH changed AS (DELETE FROM {target} WHERE {where} AND {holds} RETURNING 1) "
        f"SELECT EXISTS (SELECT 1 FROM changed), EXISTS (SELECT 1 FROM {target} WHERE {where})"
    )
    return Statement(sql, tuple(p.values))
