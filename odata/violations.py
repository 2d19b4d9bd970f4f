"""A write PostgreSQL refused → the OData error that says which property broke which rule.

PostgreSQL's own messages name physical tables, columns and constraints; the client knows the
OData names. This module reads the error's diagnostic fields (SQLSTATE, column, constraint,
table, data type) and states the rule with the model's names, from what the catalogue loaded
about the table's constraints. It never shows PostgreSQL's text and never runs a query.
"""

from __future__ import annotations

import asyncpg

from odata.errors import (
    Conflict,
    ConstraintViolation,
    Forbidden,
    InvalidBody,
    ODataError,
    ServiceUnavailable,
)
from odata.model import EntitySet, Model


def explain(
    model: Model, entity_set: EntitySet, kind: str, entity: str, exc: asyncpg.PostgresError
) -> ODataError | None:
    """The error for a refused write, or None when the failure is not a refusal of the data.

    `kind` is the write (create, update, replace, delete); `entity` names the entity in
    messages, e.g. `Category(3)` (just the set's name on create)."""
    state = exc.sqlstate or ""
    if state == "23502":
        return _not_null(entity_set, exc)
    if state == "23505":
        return _unique(entity_set, exc)
    if state == "23503":
        # A foreign key of this table (also as cloned into a partition, under the same name)
        # on create or update; otherwise another table's key still points at this entity.
        own = entity_set.constraint(getattr(exc, "constraint_name", None))
        if kind != "delete" and own is not None and own.kind == "foreign key":
            return _missing_reference(entity_set, exc)
        return _still_referred(model, entity, exc)
    if state == "23514":
        return _check(entity_set, exc)
    if state == "23P01":
        names = _names(entity_set, exc)
        what = ", ".join(names) if names else entity_set.name
        return Conflict(
            f"{what}: conflicts with another {entity_set.name} (an exclusion rule)",
            target=names[0] if names else None,
        )
    if state.startswith("23"):
        return Conflict(f"{entity}: the change breaks a rule of the table")
    if state == "428C9":  # a generated column written to: the model marks these computed
        return InvalidBody(f"{entity_set.name}: a computed property cannot be written")
    if state == "42501":
        return Forbidden(f"{entity_set.name}: the database does not let this service change it")
    if state == "25006":
        return ServiceUnavailable("the database is read-only right now; try again later")
    if state.startswith("40"):
        return ServiceUnavailable(f"{entity}: a concurrent change got in the way; try again")
    if state.startswith("P0"):
        return ConstraintViolation(f"{entity}: the database refused the change (a trigger rule)")
    return None


def _names(entity_set: EntitySet, exc: asyncpg.PostgresError) -> tuple[str, ...]:
    found = entity_set.constraint(getattr(exc, "constraint_name", None))
    return found.properties if found is not None else ()


def _not_null(entity_set: EntitySet, exc: asyncpg.PostgresError) -> ODataError:
    column = getattr(exc, "column_name", None)
    for prop in entity_set.entity_type.properties:
        if prop.column == column:
            return InvalidBody(
                f"{prop.name}: a value is required (the property is not nullable)",
                target=prop.name,
            )
    return InvalidBody(
        f"{entity_set.name}: the table requires a value for a column this service does not "
        "expose; ask the operator to give it a default or to expose it"
    )


def _unique(entity_set: EntitySet, exc: asyncpg.PostgresError) -> ODataError:
    found = entity_set.constraint(getattr(exc, "constraint_name", None))
    names = found.properties if found is not None else ()
    if found is not None and found.kind == "primary key":
        key = ", ".join(names or entity_set.entity_type.key)
        return Conflict(
            f"{key}: another {entity_set.name} already has this key",
            target=(names or entity_set.entity_type.key)[0],
        )
    if names:
        these = "this value" if len(names) == 1 else "these values"
        rule = "must be unique" if len(names) == 1 else "must be unique together"
        return Conflict(
            f"{', '.join(names)}: another {entity_set.name} already has {these} ({rule})",
            target=names[0],
        )
    return Conflict(
        f"{entity_set.name}: another entity already has these values (a uniqueness rule)"
    )


def _missing_reference(entity_set: EntitySet, exc: asyncpg.PostgresError) -> ODataError:
    found = entity_set.constraint(getattr(exc, "constraint_name", None))
    names = found.properties if found is not None else ()
    what = ", ".join(names) if names else entity_set.name
    these = "this value" if len(names) <= 1 else "these values"
    if found is not None and found.references:
        rule = f"no {found.references} has {these}"
    else:
        rule = f"{these} must refer to an existing record, and no record has {these}"
    return Conflict(f"{what}: {rule}", target=names[0] if names else None)


def _still_referred(model: Model, entity: str, exc: asyncpg.PostgresError) -> ODataError:
    referrer = model.entity_set_of(exc.schema_name, exc.table_name)
    found = referrer.constraint(exc.constraint_name) if referrer is not None else None
    if referrer is not None and found is not None and found.properties:
        by = f"{referrer.name} ({', '.join(found.properties)})"
    elif referrer is not None:
        by = referrer.name
    else:
        by = "other records"
    return Conflict(f"{entity} is still referred to by {by}")


def _check(entity_set: EntitySet, exc: asyncpg.PostgresError) -> ODataError:
    if exc.table_name is None and getattr(exc, "data_type_name", None):
        # A domain's CHECK: PostgreSQL names the domain, not the column.
        domain = exc.data_type_name
        names = tuple(
            name
            for c in entity_set.constraints
            if c.name == exc.constraint_name and c.domain == domain
            for name in c.properties
        )
    else:
        names = _names(entity_set, exc)
    if not names:
        return ConstraintViolation(
            f"{entity_set.name}: the values are not allowed by a rule of the table"
        )
    if len(names) == 1:
        return ConstraintViolation(
            f"{names[0]}: the value is not allowed (a CHECK rule on {names[0]})", target=names[0]
        )
    listed = ", ".join(names)
    return ConstraintViolation(
        f"{listed}: the values are not allowed together (a CHECK rule on {listed})",
        target=names[0],
    )
