"""Render a `Model` as the `$metadata` document (CSDL XML 4.0 or CSDL JSON 4.01) and as the
service document.

Pure rendering of what the model says, in the model's order, so the same model always gives the
same bytes; the caller renders once per model and caches. It does not choose names, types or
facets (`odata.catalog` and `odata.naming` do) and knows nothing about HTTP.

Facets, and why:
- Key properties are always declared `Nullable="false"` (CSDL requires it), even when the
  catalogue reports the column nullable, as it does for every column of a view.
- `Edm.Decimal` always carries an explicit numeric `Scale`: the model's scale, or 0 when the
  model gives a precision without a scale (PostgreSQL `numeric(p)` means `numeric(p,0)`).
  Salesforce maps Decimal to a Number field of at most 18 digits and needs both facets
  (spec §5); keeping `Precision` ≤ 18 is the catalogue's job. `Scale="variable"` (and
  `"floating"`) is never emitted: Salesforce cannot size a field from it. A Decimal without
  precision gets neither facet, which a client reads as scale 0, so the catalogue must not
  produce one for data with decimals.
- `MaxLength`, `Precision` and `Scale` on other types are emitted exactly when the model sets
  them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from lxml import etree

from odata.model import EntityType, Model, Property

EDMX_NS = "http://docs.oasis-open.org/odata/ns/edmx"
EDM_NS = "http://docs.oasis-open.org/odata/ns/edm"

# The primitive types Salesforce Connect maps to a field (spec §5); anything else is a bug in
# the model, not something to show a client.
SUPPORTED_EDM_TYPES = frozenset(
    {
        "Edm.Binary",
        "Edm.Boolean",
        "Edm.Byte",
        "Edm.Date",
        "Edm.DateTimeOffset",
        "Edm.Decimal",
        "Edm.Double",
        "Edm.Guid",
        "Edm.Int16",
        "Edm.Int32",
        "Edm.Int64",
        "Edm.SByte",
        "Edm.Single",
        "Edm.String",
        "Edm.TimeOfDay",
    }
)


def _entity_types(model: Model) -> Iterator[EntityType]:
    """Each entity type once, in the order its first set appears; rejects models CSDL cannot
    express (two sets or two types under one name, a type named like the container, a
    repeated property, a key outside the type, a type Salesforce cannot map)."""
    if len(model.by_name) != len(model.entity_sets):
        raise ValueError("two entity sets share a name")
    seen: dict[str, EntityType] = {}
    for entity_set in model.entity_sets:
        entity_type = entity_set.entity_type
        previous = seen.get(entity_type.name)
        if previous is not None:
            if previous != entity_type:
                raise ValueError(f"two different entity types are named {entity_type.name!r}")
            continue
        if entity_type.name == model.container:
            raise ValueError(f"entity type {entity_type.name!r} has the container's name")
        if len(entity_type.by_name) != len(entity_type.properties):
            raise ValueError(f"entity type {entity_type.name!r} repeats a property name")
        if not entity_type.key:
            raise ValueError(f"entity type {entity_type.name!r} has no key")
        for name in entity_type.key:
            if entity_type.prop(name) is None:
                raise ValueError(f"key {name!r} is not a property of {entity_type.name!r}")
        for prop in entity_type.properties:
            if prop.edm_type not in SUPPORTED_EDM_TYPES:
                raise ValueError(f"{entity_type.name}.{prop.name}: unsupported {prop.edm_type}")
        seen[entity_type.name] = entity_type
        yield entity_type


def _facets(prop: Property) -> dict[str, int]:
    """The facets to declare, by their CSDL XML name; see the module docstring for Decimal."""
    scale = prop.scale
    if prop.edm_type == "Edm.Decimal" and prop.precision is not None and scale is None:
        scale = 0
    facets = {"MaxLength": prop.max_length, "Precision": prop.precision, "Scale": scale}
    return {name: value for name, value in facets.items() if value is not None}


def _nullable(prop: Property, entity_type: EntityType) -> bool:
    return prop.nullable and prop.name not in entity_type.key


def metadata_xml(model: Model) -> bytes:
    """The CSDL XML 4.0 document for `model`: UTF-8 with an XML declaration."""
    edmx = etree.Element(f"{{{EDMX_NS}}}Edmx", nsmap={"edmx": EDMX_NS}, Version="4.0")
    services = etree.SubElement(edmx, f"{{{EDMX_NS}}}DataServices")
    # The stubs type nsmap keys as str, but None (the default namespace) is what keeps every
    # element below unprefixed, as CSDL documents are customarily written.
    default_ns: dict[Any, str] = {None: EDM_NS}
    schema = etree.SubElement(
        services, f"{{{EDM_NS}}}Schema", nsmap=default_ns, Namespace=model.namespace
    )
    for entity_type in _entity_types(model):
        type_el = etree.SubElement(schema, f"{{{EDM_NS}}}EntityType", Name=entity_type.name)
        key_el = etree.SubElement(type_el, f"{{{EDM_NS}}}Key")
        for name in entity_type.key:
            etree.SubElement(key_el, f"{{{EDM_NS}}}PropertyRef", Name=name)
        for prop in entity_type.properties:
            prop_el = etree.SubElement(
                type_el, f"{{{EDM_NS}}}Property", Name=prop.name, Type=prop.edm_type
            )
            if not _nullable(prop, entity_type):
                prop_el.set("Nullable", "false")
            for facet, value in _facets(prop).items():
                prop_el.set(facet, str(value))
    container = etree.SubElement(schema, f"{{{EDM_NS}}}EntityContainer", Name=model.container)
    for entity_set in model.entity_sets:
        etree.SubElement(
            container,
            f"{{{EDM_NS}}}EntitySet",
            Name=entity_set.name,
            EntityType=f"{model.namespace}.{entity_set.entity_type.name}",
        )
    return etree.tostring(edmx, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _json_property(prop: Property, entity_type: EntityType) -> dict[str, Any]:
    # In CSDL JSON `$Type` defaults to Edm.String and `$Nullable` to false, so both are
    # written only when they differ from the default.
    member: dict[str, Any] = {}
    if prop.edm_type != "Edm.String":
        member["$Type"] = prop.edm_type
    if _nullable(prop, entity_type):
        member["$Nullable"] = True
    for facet, value in _facets(prop).items():
        member[f"${facet}"] = value
    return member


def metadata_json(model: Model) -> bytes:
    """The CSDL JSON 4.01 document for `model`: compact UTF-8 JSON."""
    schema: dict[str, Any] = {}
    for entity_type in _entity_types(model):
        type_obj: dict[str, Any] = {"$Kind": "EntityType", "$Key": list(entity_type.key)}
        for prop in entity_type.properties:
            type_obj[prop.name] = _json_property(prop, entity_type)
        schema[entity_type.name] = type_obj
    container: dict[str, Any] = {"$Kind": "EntityContainer"}
    for entity_set in model.entity_sets:
        container[entity_set.name] = {
            "$Collection": True,
            "$Type": f"{model.namespace}.{entity_set.entity_type.name}",
        }
    schema[model.container] = container
    document = {
        "$Version": "4.01",
        "$EntityContainer": f"{model.namespace}.{model.container}",
        model.namespace: schema,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def service_document(model: Model, metadata_url: str) -> dict[str, Any]:
    """The OData JSON service document: one entry per entity set, URLs relative to the root."""
    return {
        "@odata.context": metadata_url,
        "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in model.entity_sets],
    }
