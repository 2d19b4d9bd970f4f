"""The EDM model: entity sets, entity types, properties and keys, as the service exposes them.

Types only; `odata.catalog` builds a `Model` from the PostgreSQL catalogue and `odata.csdl`
renders it as CSDL. A `Model` is immutable and shared by every request until it is reloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Property:
    name: str  # OData name, Salesforce-safe
    column: str  # PostgreSQL column name, as stored
    edm_type: str  # e.g. "Edm.Int32"
    nullable: bool = True
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    db_type: str = ""  # PostgreSQL type name (pg_type.typname), e.g. "numeric", "varchar"


@dataclass(frozen=True, slots=True)
class EntityType:
    name: str
    properties: tuple[Property, ...]
    key: tuple[str, ...]  # OData property names, in key order
    by_name: Mapping[str, Property] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.properties})

    def prop(self, name: str) -> Property | None:
        return self.by_name.get(name)

    @property
    def key_properties(self) -> tuple[Property, ...]:
        return tuple(self.by_name[k] for k in self.key)


@dataclass(frozen=True, slots=True)
class EntitySet:
    name: str
    schema: str  # PostgreSQL schema of the table or view
    table: str  # PostgreSQL relation name
    entity_type: EntityType
    is_view: bool = False
    writable: bool = True
    # A key column may hold NULL (a configured key, or a Heroku Connect table's sfid): such rows
    # cannot be addressed, so collections and counts leave them out.
    nullable_key: bool = False


@dataclass(frozen=True, slots=True)
class Model:
    namespace: str
    container: str
    entity_sets: tuple[EntitySet, ...]
    by_name: Mapping[str, EntitySet] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {s.name: s for s in self.entity_sets})

    def entity_set(self, name: str) -> EntitySet | None:
        return self.by_name.get(name)
