"""Writes from Salesforce's writable external objects: create, update, replace, delete.

Validates a JSON entity body against the entity type (unknown names, wrong JSON types, key
changes are 400s) and compiles it into one parametrised INSERT/UPDATE/DELETE. Values are bound as
text and cast by PostgreSQL to the column type, so its own input rules decide what fits.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
from dataclasses import dataclass
from typing import Any, Literal

from odata.catalog import is_native
from odata.errors import InvalidBody, MethodNotAllowed
from odata.model import EntitySet, Property
from odata.plan import Lit, _closest
from odata.sql import OutputFormat, Statement, _Compiler, _Params, column, ident, relation

WriteKind = Literal["create", "update", "replace", "delete"]
READ_ONLY_ALLOW = ("GET", "HEAD")


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


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw, parse_float=decimal.Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"the request body is not valid JSON ({exc})") from None
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
            raise InvalidBody(f"'{name}' is not a property of {entity_set.name}{hint}", target=name)
        out.append((prop, _bindable(prop, value)))
    return Values(tuple(out))


def _bindable(prop: Property, value: Any) -> Any:
    if value is None:
        if not prop.nullable:
            raise InvalidBody(f"{prop.name} cannot be null", target=prop.name)
        return None
    edm = prop.edm_type
    wrong = InvalidBody(
        f"{prop.name} is {edm}; got {type(value).__name__} {_short(value)}", target=prop.name
    )
    if edm == "Edm.Boolean":
        if not isinstance(value, bool):
            raise wrong
        return "true" if value else "false"
    if edm in ("Edm.Byte", "Edm.SByte", "Edm.Int16", "Edm.Int32", "Edm.Int64"):
        if isinstance(value, bool) or not isinstance(value, int | str | decimal.Decimal):
            raise wrong
        if isinstance(value, decimal.Decimal) and value != value.to_integral_value():
            raise wrong
        return str(value)  # IEEE754Compatible clients send Int64 as strings
    if edm in ("Edm.Decimal", "Edm.Double", "Edm.Single"):
        if isinstance(value, bool) or not isinstance(value, int | str | decimal.Decimal):
            raise wrong
        if isinstance(value, str) and edm != "Edm.Decimal":
            mapped = {"INF": "Infinity", "-INF": "-Infinity", "NaN": "NaN"}.get(value)
            if mapped is None:
                raise wrong
            return mapped
        return str(value)
    if edm == "Edm.Binary":
        if not isinstance(value, str):
            raise wrong
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise InvalidBody(f"{prop.name} must be base64url-encoded", target=prop.name) from None
    if edm == "Edm.String" and not is_native(prop.db_type) and not isinstance(value, str):
        return json.dumps(value)  # e.g. a json column written as a JSON value
    if not isinstance(value, str):
        raise wrong
    return value


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


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
    # the column itself when the value is stored.
    return ident(prop.db_type) if prop.db_type else "text"


def _returning(c: _Compiler, entity_set: EntitySet, fmt: OutputFormat) -> str:
    outputs = c.outputs(entity_set, entity_set.entity_type.properties, fmt)
    return f"SELECT to_json(r)::text FROM changed AS t CROSS JOIN LATERAL (SELECT {outputs}) AS r"


def insert(entity_set: EntitySet, vals: Values, fmt: OutputFormat) -> Statement:
    p = _Params()
    c = _Compiler(p)
    if vals.items:
        cols = ", ".join(ident(prop.column) for prop, _ in vals.items)
        exprs = ", ".join(_cast(p, prop, v) for prop, v in vals.items)
        insert_sql = f"INSERT INTO {relation(entity_set)} ({cols}) VALUES ({exprs}) RETURNING *"
    else:
        insert_sql = f"INSERT INTO {relation(entity_set)} DEFAULT VALUES RETURNING *"
    sql = f"WITH changed AS ({insert_sql}) {_returning(c, entity_set, fmt)}"
    return Statement(sql, tuple(p.values))


def update(
    entity_set: EntitySet,
    key: tuple[tuple[Property, Lit], ...],
    vals: Values,
    *,
    replace: bool,
) -> Statement:
    """UPDATE by key; returns one row (the key) when the entity exists. `replace` (PUT) resets
    the properties the body leaves out to their defaults."""
    p = _Params()
    c = _Compiler(p)
    key_names = {prop.name for prop, _ in key}
    given = {prop.name: (prop, v) for prop, v in vals.items}
    for prop, lit in key:
        if prop.name in given and str(given[prop.name][1]) != str(lit.value):
            raise InvalidBody(f"{prop.name} is the key and cannot be changed", target=prop.name)
    sets = [
        f"{ident(prop.column)} = {_cast(p, prop, v)}"
        for prop, v in vals.items
        if prop.name not in key_names
    ]
    if replace:
        sets += [
            f"{ident(prop.column)} = DEFAULT"
            for prop in entity_set.entity_type.properties
            if prop.name not in key_names and prop.name not in given
        ]
    where = " AND ".join(f"{column(prop)} = {c.value(lit)}" for prop, lit in key)
    target = f"{relation(entity_set)} AS t"
    if not sets:  # nothing to change: still answer 404 for a missing entity
        return Statement(f"SELECT 1 FROM {target} WHERE {where}", tuple(p.values))
    return Statement(
        f"UPDATE {target} SET {', '.join(sets)} WHERE {where} RETURNING 1", tuple(p.values)
    )


def delete(entity_set: EntitySet, key: tuple[tuple[Property, Lit], ...]) -> Statement:
    p = _Params()
    c = _Compiler(p)
    where = " AND ".join(f"{column(prop)} = {c.value(lit)}" for prop, lit in key)
    return Statement(
        f"DELETE FROM {relation(entity_set)} AS t WHERE {where} RETURNING 1", tuple(p.values)
    )
