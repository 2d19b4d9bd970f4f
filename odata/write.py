"""Writes from Salesforce's writable external objects: create, update, replace, delete.

Validates a JSON entity body against the entity type before the database sees it: unknown
names, wrong JSON types, values outside the declared facets (MaxLength, Precision, Scale, the
range of each integer type), enum labels and text PostgreSQL cannot store are 400s that name the
property and the rule. The result is a `WritePlan`, the write's counterpart of the read plan;
`odata.sql.write` compiles it into ONE parametrised INSERT/UPDATE/DELETE whose values are bound
as text and cast by PostgreSQL to the column type, so its own input rules decide the rest (a
value they refuse is traced back to its property with `odata.sql.probes`). Refusals by the
table's rules are translated in `odata.violations`. This module builds no SQL.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal

from odata import etags
from odata.catalog import is_native
from odata.errors import InvalidBody, MethodNotAllowed
from odata.model import EntitySet, Property
from odata.plan import Lit, closest, resource_key_text

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
            guess = closest(name, [p.name for p in etype.properties])
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


@dataclass(frozen=True, slots=True)
class WritePlan:
    """A validated write, what `odata.sql.write` compiles (as `CollectionPlan` is for a read).

    `key` is empty for a create; `values` is empty for a delete. `entity` is how messages name
    the target: `Sales(3)`, or the entity set for a create.
    """

    entity_set: EntitySet
    kind: WriteKind
    entity: str
    key: tuple[tuple[Property, Lit], ...] = ()
    values: Values = Values(())
    precondition: etags.Precondition = etags.NONE


_KINDS: dict[str, WriteKind] = {
    "POST": "create",
    "PATCH": "update",
    "PUT": "replace",
    "DELETE": "delete",
}


def plan_write(
    entity_set: EntitySet,
    method: str,
    key: tuple[tuple[Property, Lit], ...],
    body: dict[str, Any] | None,
    precondition: etags.Precondition = etags.NONE,
) -> WritePlan:
    """The write a POST (no key), PATCH, PUT or DELETE (with the key `plan.resolve_key` found)
    asks for, refused (400) before any SQL when a name, a value or a key change is wrong."""
    check_writable(entity_set)
    kind = _KINDS[method]
    if kind == "create":
        return WritePlan(entity_set, kind, entity_set.name, values=values(entity_set, body or {}))
    resolved = key
    entity = f"{entity_set.name}({resource_key_text(resolved)})"
    if kind == "delete":
        return WritePlan(entity_set, kind, entity, resolved, precondition=precondition)
    vals = values(entity_set, body or {})
    given = {prop.name: v for prop, v in vals.items}
    for prop, lit in resolved:
        if prop.name in given and str(given[prop.name]) != str(lit.value):
            raise _invalid(prop, "is the key and cannot be changed")
    return WritePlan(entity_set, kind, entity, resolved, vals, precondition)
