"""`$metadata` rendering: the XML validates against the OASIS EDMX/EDM schemas, the JSON against
the OASIS CSDL JSON schema, and both say what the model says (read back, not string-compared).

Deliberate deviation from the OASIS JSON schema as published: its name patterns use Unicode
property escapes (`\\p{L}`), which Python's `re` (jsonschema's regex engine) cannot compile, so
`oasis_json_validator` rewrites each escape as the equivalent character class, built from
`unicodedata` for every code point.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from odata.csdl import metadata_json, metadata_xml, service_document
from odata.model import EntitySet, EntityType, Model, Property
from odata.naming import assign_names

SPEC_DIR = Path(__file__).resolve().parent / "spec" / "odata"  # vendored: tests/spec/README.md
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"


# --- the test model -----------------------------------------------------------------------------

P = Property
SALES_PROPS = (
    P("SaleID", "saleid", "Edm.String", nullable=False, max_length=20, db_type="varchar"),
    P("Region", "region", "Edm.String", max_length=80, db_type="varchar"),
    P("Notes", "notes", "Edm.String", db_type="text"),
    P("IsPaid", "is_paid", "Edm.Boolean", nullable=False, db_type="bool"),
    P("Quantity", "quantity", "Edm.Int16", db_type="int2"),
    P("StoreNo", "store_no", "Edm.Int32", db_type="int4"),
    P("Views", "views", "Edm.Int64", db_type="int8"),
    P("Amount", "amount", "Edm.Decimal", nullable=False, precision=18, scale=2, db_type="numeric"),
    P("Units", "units", "Edm.Decimal", precision=10, db_type="numeric"),  # numeric(10)
    P("Ratio", "ratio", "Edm.Double", db_type="float8"),
    P("Weight", "weight", "Edm.Single", db_type="float4"),
    P("SaleDate", "sale_date", "Edm.Date", db_type="date"),
    P("ShippedAt", "shipped_at", "Edm.DateTimeOffset", precision=6, db_type="timestamptz"),
    P("OpensAt", "opens_at", "Edm.TimeOfDay", db_type="time"),
    P("TrackingId", "tracking_id", "Edm.Guid", db_type="uuid"),
    P("Receipt", "receipt", "Edm.Binary", db_type="bytea"),
    P("Flags", "flags", "Edm.Byte", db_type="int2"),
    P("Delta", "delta", "Edm.SByte", db_type="int2"),
)
SALES = EntityType("Sales", SALES_PROPS, key=("SaleID",))
# Key order (OrderID, LineNo) differs from property order.
SALES_LINE = EntityType(
    "SalesLine",
    (
        P("LineNo", "line_no", "Edm.Int32", nullable=False),
        P("Product", "product", "Edm.String", max_length=255),
        P("OrderID", "order_id", "Edm.Int64", nullable=False),
    ),
    key=("OrderID", "LineNo"),
)
# A view: PostgreSQL reports every view column nullable, the key included.
SUMMARY = EntityType(
    "SalesSummary",
    (
        P("Region", "region", "Edm.String", max_length=80),
        P("Total", "total", "Edm.Decimal", precision=18, scale=4),
    ),
    key=("Region",),
)


def build_model() -> Model:
    return Model(
        namespace="R2SF",
        container="Container",
        entity_sets=(
            EntitySet("Sales", "public", "sales", SALES),
            EntitySet("SalesLine", "public", "sales_line", SALES_LINE),
            EntitySet("SalesSummary", "reports", "sales_summary", SUMMARY, True, False),
        ),
    )


# --- validators ---------------------------------------------------------------------------------


def spec_file(name: str) -> Path:
    return SPEC_DIR / name


@cache
def _edmx_schema(path: Path) -> etree.XMLSchema:
    # edmx.xsd imports edm.xsd by a relative schemaLocation, resolved beside the file;
    # no_network makes sure nothing is ever fetched.
    parser = etree.XMLParser(no_network=True)
    return etree.XMLSchema(etree.parse(str(path), parser))


def edmx_schema() -> etree.XMLSchema:
    return _edmx_schema(spec_file("edmx.xsd"))


@cache
def _unicode_classes() -> dict[str, str]:
    """`\\p{X}` for the categories the OASIS schema uses, as explicit `re` character classes."""
    wanted = {"L": "L", "Nl": "Nl", "Nd": "Nd", "Mn": "Mn", "Mc": "Mc", "Pc": "Pc", "Cf": "Cf"}
    ranges: dict[str, list[list[int]]] = {k: [] for k in wanted}
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        for name in (cat, cat[0]):
            if name in ranges:
                spans = ranges[name]
                if spans and spans[-1][1] == cp - 1:
                    spans[-1][1] = cp
                else:
                    spans.append([cp, cp])
    return {
        name: "["
        + "".join(
            re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
            for a, b in spans
        )
        + "]"
        for name, spans in ranges.items()
    }


def _translate(node: Any) -> Any:
    classes = _unicode_classes()
    if isinstance(node, str):
        return re.sub(r"\\p\{(\w+)\}", lambda m: classes[m.group(1)], node)
    if isinstance(node, list):
        return [_translate(item) for item in node]
    if isinstance(node, dict):
        return {_translate(k): _translate(v) for k, v in node.items()}
    return node


@cache
def _json_validator(path: Path) -> Any:
    schema = _translate(json.loads(path.read_text()))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def oasis_json_validator() -> Any:
    return _json_validator(spec_file("csdl.schema.json"))


def xml_errors(document: bytes | etree._Element) -> list[str]:
    root = etree.fromstring(document) if isinstance(document, bytes) else document
    schema = edmx_schema()
    return [] if schema.validate(root) else str(schema.error_log).splitlines()


def json_errors(document: bytes | dict[str, Any]) -> list[str]:
    doc = json.loads(document) if isinstance(document, bytes) else document
    return [e.message for e in oasis_json_validator().iter_errors(doc)]


def parse_xml(model: Model) -> etree._Element:
    return etree.fromstring(metadata_xml(model))


def find(element: etree._Element, path: str) -> etree._Element:
    found = element.find(path)
    assert found is not None, path
    return found


def detach(element: etree._Element) -> None:
    parent = element.getparent()
    assert parent is not None
    parent.remove(element)


def xml_type(root: etree._Element, name: str) -> etree._Element:
    found = root.findall(f"{EDMX}DataServices/{EDM}Schema/{EDM}EntityType[@Name='{name}']")
    assert len(found) == 1
    return found[0]


# --- XML ----------------------------------------------------------------------------------------


def test_metadata_xml_validates_against_oasis_edmx_schema() -> None:
    assert xml_errors(metadata_xml(build_model())) == []


def test_xsd_rejects_a_key_without_property_refs() -> None:
    root = parse_xml(build_model())
    refs = xml_type(root, "SalesLine").findall(f"{EDM}Key/{EDM}PropertyRef")
    assert refs
    for ref in refs:
        detach(ref)
    assert xml_errors(root) != []


def every_type_has_a_key(root: etree._Element) -> bool:
    # The XSD accepts an EntityType without <Key> (a derived type inherits its base's key), so
    # Salesforce's need for a key on every type (spec §5) is checked here instead.
    return all(
        t.find(f"{EDM}Key/{EDM}PropertyRef") is not None for t in root.iter(f"{EDM}EntityType")
    )


def test_every_entity_type_declares_a_key_and_the_check_catches_a_missing_one() -> None:
    root = parse_xml(build_model())
    assert every_type_has_a_key(root)
    detach(find(xml_type(root, "Sales"), f"{EDM}Key"))
    assert not every_type_has_a_key(root)


def test_xsd_rejects_a_variable_precision() -> None:
    root = parse_xml(build_model())
    find(root, f".//{EDM}Property[@Name='Amount']").set("Precision", "variable")
    assert xml_errors(root) != []


def test_metadata_xml_is_utf8_csdl_4_0_with_one_schema() -> None:
    document = metadata_xml(build_model())
    assert document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = etree.fromstring(document)
    assert root.tag == f"{EDMX}Edmx"
    assert root.get("Version") == "4.0"
    schemas = root.findall(f"{EDMX}DataServices/{EDM}Schema")
    assert [s.get("Namespace") for s in schemas] == ["R2SF"]


def test_key_property_refs_follow_key_order_not_property_order() -> None:
    refs = xml_type(parse_xml(build_model()), "SalesLine").findall(f"{EDM}Key/{EDM}PropertyRef")
    assert [r.get("Name") for r in refs] == ["OrderID", "LineNo"]


def test_properties_keep_model_order_with_type_nullability_and_facets() -> None:
    entity = xml_type(parse_xml(build_model()), "Sales")
    props = {p.get("Name"): dict(p.attrib) for p in entity.findall(f"{EDM}Property")}
    assert list(props) == [p.name for p in SALES_PROPS]
    assert props["SaleID"] == {
        "Name": "SaleID",
        "Type": "Edm.String",
        "Nullable": "false",
        "MaxLength": "20",
    }
    assert props["Notes"] == {"Name": "Notes", "Type": "Edm.String"}
    assert props["Amount"] == {
        "Name": "Amount",
        "Type": "Edm.Decimal",
        "Nullable": "false",
        "Precision": "18",
        "Scale": "2",
    }
    assert props["ShippedAt"] == {
        "Name": "ShippedAt",
        "Type": "Edm.DateTimeOffset",
        "Precision": "6",
    }
    assert props["IsPaid"]["Nullable"] == "false"
    assert {name: a["Type"] for name, a in props.items()} == {
        p.name: p.edm_type for p in SALES_PROPS
    }
    nullable = [name for name, a in props.items() if "Nullable" not in a]
    assert nullable == [p.name for p in SALES_PROPS if p.nullable]


def test_decimal_without_scale_declares_scale_zero_and_never_variable() -> None:
    document = metadata_xml(build_model())
    units = find(etree.fromstring(document), f".//{EDM}Property[@Name='Units']")
    assert (units.get("Precision"), units.get("Scale")) == ("10", "0")
    assert b"variable" not in document and b"floating" not in document


def test_view_key_is_declared_not_nullable_though_column_is_nullable() -> None:
    entity = xml_type(parse_xml(build_model()), "SalesSummary")
    assert find(entity, f"{EDM}Property[@Name='Region']").get("Nullable") == "false"
    assert find(entity, f"{EDM}Property[@Name='Total']").get("Nullable") is None


def test_container_lists_every_set_with_its_qualified_type() -> None:
    root = parse_xml(build_model())
    containers = root.findall(f".//{EDM}EntityContainer")
    assert [c.get("Name") for c in containers] == ["Container"]
    sets = [(s.get("Name"), s.get("EntityType")) for s in containers[0]]
    assert sets == [
        ("Sales", "R2SF.Sales"),
        ("SalesLine", "R2SF.SalesLine"),
        ("SalesSummary", "R2SF.SalesSummary"),
    ]


def test_same_model_renders_identical_bytes() -> None:
    assert metadata_xml(build_model()) == metadata_xml(build_model())
    assert metadata_json(build_model()) == metadata_json(build_model())


def test_entity_type_shared_by_two_sets_is_declared_once() -> None:
    model = Model(
        "NS", "C", (EntitySet("A", "s", "a", SALES_LINE), EntitySet("B", "s", "b", SALES_LINE))
    )
    root = parse_xml(model)
    assert len(root.findall(f".//{EDM}EntityType")) == 1
    assert xml_errors(root) == []
    assert json_errors(metadata_json(model)) == []


def _other(name: str) -> EntityType:
    return EntityType(name, (P("Code", "code", "Edm.String", nullable=False),), key=("Code",))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            Model(
                "NS",
                "C",
                (EntitySet("A", "s", "a", SALES), EntitySet("B", "s", "b", _other("Sales"))),
            ),
            "two different entity types",
        ),
        (
            Model(
                "NS",
                "C",
                (EntitySet("A", "s", "a", EntityType("T", (P("x", "x", "Edm.Int32"),), ())),),
            ),
            "no key",
        ),
        (
            Model(
                "NS",
                "C",
                (EntitySet("A", "s", "a", EntityType("T", (P("x", "x", "Edm.Int32"),), ("y",))),),
            ),
            "key",
        ),
        (
            Model(
                "NS",
                "C",
                (
                    EntitySet(
                        "A", "s", "a", EntityType("T", (P("x", "x", "Edm.Duration"),), ("x",))
                    ),
                ),
            ),
            "unsupported",
        ),
        (Model("NS", "C", (EntitySet("A", "s", "a", _other("C")),)), "container"),
        (
            Model(
                "NS",
                "C",
                (EntitySet("A", "s", "a", _other("T")), EntitySet("A", "s", "b", _other("T"))),
            ),
            "sets",
        ),
    ],
    ids=[
        "type-name-clash",
        "no-key",
        "key-not-a-property",
        "duration",
        "container-clash",
        "set-name-clash",
    ],
)
def test_model_that_csdl_cannot_express_is_rejected(model: Model, reason: str) -> None:
    for render in (metadata_xml, metadata_json):
        with pytest.raises(ValueError, match=reason):
            render(model)


# --- JSON ---------------------------------------------------------------------------------------


def test_metadata_json_validates_against_oasis_csdl_json_schema() -> None:
    assert json_errors(metadata_json(build_model())) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["R2SF"]["Container"]["Sales"].pop("$Type"),
        lambda d: d["R2SF"]["Sales"].update({"$Kind": "Table"}),
        lambda d: d["R2SF"]["Sales"]["Amount"].update({"$Precision": -1}),
        lambda d: d["R2SF"]["Sales"].update({"1bad name": {}}),
    ],
    ids=["set-without-type", "unknown-kind", "negative-precision", "invalid-identifier"],
)
def test_json_schema_rejects_a_broken_document(breakage: Callable[[dict[str, Any]], Any]) -> None:
    document = json.loads(metadata_json(build_model()))
    breakage(document)
    assert json_errors(document) != []


def test_json_schema_translation_keeps_unicode_identifiers_valid() -> None:
    document = json.loads(metadata_json(build_model()))
    document["R2SF"]["Sales"]["Café_Ümlaut"] = {}
    assert json_errors(document) == []


def test_metadata_json_is_compact_4_01_with_container_and_keys() -> None:
    raw = metadata_json(build_model())
    document = json.loads(raw)
    assert raw == json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    assert document["$Version"] == "4.01"
    assert document["$EntityContainer"] == "R2SF.Container"
    schema = document["R2SF"]
    assert schema["SalesLine"]["$Kind"] == "EntityType"
    assert schema["SalesLine"]["$Key"] == ["OrderID", "LineNo"]
    assert schema["Container"] == {
        "$Kind": "EntityContainer",
        "Sales": {"$Collection": True, "$Type": "R2SF.Sales"},
        "SalesLine": {"$Collection": True, "$Type": "R2SF.SalesLine"},
        "SalesSummary": {"$Collection": True, "$Type": "R2SF.SalesSummary"},
    }


def test_json_properties_use_csdl_json_defaults_for_type_and_nullable() -> None:
    sales = json.loads(metadata_json(build_model()))["R2SF"]["Sales"]
    assert [k for k in sales if not k.startswith("$")] == [p.name for p in SALES_PROPS]
    assert sales["SaleID"] == {"$MaxLength": 20}  # String and not nullable: both defaults
    assert sales["Notes"] == {"$Nullable": True}
    assert sales["Amount"] == {"$Type": "Edm.Decimal", "$Precision": 18, "$Scale": 2}
    assert sales["Units"] == {
        "$Type": "Edm.Decimal",
        "$Nullable": True,
        "$Precision": 10,
        "$Scale": 0,
    }
    for prop in SALES_PROPS:
        member = sales[prop.name]
        assert member.get("$Type", "Edm.String") == prop.edm_type
        assert member.get("$Nullable", False) == prop.nullable


def test_json_and_xml_declare_the_same_facets() -> None:
    model = build_model()
    root = parse_xml(model)
    schema = json.loads(metadata_json(model))["R2SF"]
    for entity_set in model.entity_sets:
        type_name = entity_set.entity_type.name
        for prop_el in xml_type(root, type_name).findall(f"{EDM}Property"):
            member = schema[type_name][prop_el.get("Name")]
            from_xml = {"$" + str(k): str(v) for k, v in prop_el.attrib.items() if k != "Name"}
            from_xml.setdefault("$Nullable", "true")
            from_json = {k: str(v) for k, v in member.items()}
            from_json.setdefault("$Type", "Edm.String")
            from_json["$Nullable"] = "true" if member.get("$Nullable", False) else "false"
            assert from_json == from_xml


# --- Core vocabulary annotations -----------------------------------------------------------------

ORDERS = EntityType(
    "Orders",
    (
        P("OrderID", "id", "Edm.Int64", nullable=False, generation="computed"),
        P("Ticket", "ticket", "Edm.Int32", nullable=False, generation="default"),
        P("Total", "total", "Edm.Decimal", precision=12, scale=2, generation="computed"),
        P("Note", "note", "Edm.String", max_length=5),
    ),
    key=("OrderID",),
)


def orders_model() -> Model:
    return Model("R2SF", "Container", (EntitySet("Orders", "public", "orders", ORDERS),))


def test_generated_properties_are_annotated_in_schema_valid_xml() -> None:
    root = parse_xml(orders_model())
    assert xml_errors(root) == []
    include = find(root, f"{EDMX}Reference/{EDMX}Include")
    assert (include.get("Namespace"), include.get("Alias")) == ("Org.OData.Core.V1", "Core")
    assert find(root, f"{EDMX}Reference").get("Uri", "").endswith("/Org.OData.Core.V1.xml")
    annotations = {
        p.get("Name"): [(a.get("Term"), a.get("Bool")) for a in p.findall(f"{EDM}Annotation")]
        for p in xml_type(root, "Orders").findall(f"{EDM}Property")
    }
    assert annotations == {
        "OrderID": [("Core.Computed", "true")],
        "Ticket": [("Core.ComputedDefaultValue", "true")],
        "Total": [("Core.Computed", "true")],
        "Note": [],
    }


def test_generated_properties_are_annotated_in_schema_valid_json() -> None:
    document = json.loads(metadata_json(orders_model()))
    assert json_errors(document) == []
    assert document["$Reference"] == {
        "https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.json": {
            "$Include": [{"$Namespace": "Org.OData.Core.V1", "$Alias": "Core"}]
        }
    }
    orders = document["R2SF"]["Orders"]
    assert orders["OrderID"] == {"$Type": "Edm.Int64", "@Core.Computed": True}
    assert orders["Ticket"] == {"$Type": "Edm.Int32", "@Core.ComputedDefaultValue": True}
    assert orders["Total"]["@Core.Computed"] is True
    assert orders["Note"] == {"$Nullable": True, "$MaxLength": 5}


def test_the_vocabulary_is_referenced_only_when_a_property_uses_it() -> None:
    assert parse_xml(build_model()).find(f"{EDMX}Reference") is None
    assert "$Reference" not in json.loads(metadata_json(build_model()))


# --- service document ---------------------------------------------------------------------------


def test_service_document_lists_each_set_with_metadata_context() -> None:
    url = "https://host/odata/v4/$metadata"
    document = service_document(build_model(), url)
    assert document == {
        "@odata.context": url,
        "value": [
            {"name": "Sales", "kind": "EntitySet", "url": "Sales"},
            {"name": "SalesLine", "kind": "EntitySet", "url": "SalesLine"},
            {"name": "SalesSummary", "kind": "EntitySet", "url": "SalesSummary"},
        ],
    }


# --- any model the catalogue can build ------------------------------------------------------------

EDM_TYPES = [
    "Edm.String", "Edm.Boolean", "Edm.Byte", "Edm.SByte", "Edm.Int16", "Edm.Int32", "Edm.Int64",
    "Edm.Decimal", "Edm.Double", "Edm.Single", "Edm.Date", "Edm.DateTimeOffset",
    "Edm.TimeOfDay", "Edm.Guid", "Edm.Binary",
]  # fmt: skip


@st.composite
def properties(draw: st.DrawFn, name: str) -> Property:
    edm_type = draw(st.sampled_from(EDM_TYPES))
    precision = scale = max_length = None
    if edm_type == "Edm.Decimal":
        precision = draw(st.integers(1, 18))
        scale = draw(st.none() | st.integers(0, precision))
    elif edm_type == "Edm.String":
        max_length = draw(st.none() | st.integers(1, 10_000))
    elif edm_type in ("Edm.DateTimeOffset", "Edm.TimeOfDay"):
        precision = draw(st.none() | st.integers(0, 6))
    return Property(
        name,
        name.lower(),
        edm_type,
        draw(st.booleans()),
        max_length,
        precision,
        scale,
        generation=draw(st.sampled_from(["client", "computed", "default"])),
    )


@st.composite
def models(draw: st.DrawFn) -> Model:
    # Raw PostgreSQL names of any shape, named the way the catalogue will name them.
    raw_text = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=50)
    tables = draw(st.lists(raw_text, min_size=1, max_size=4, unique=True))
    set_names = assign_names(tables, reserved=["Container"])
    sets = []
    for table in tables:
        columns = draw(st.lists(raw_text, min_size=1, max_size=6, unique=True))
        names = assign_names(columns)
        props = tuple(draw(properties(names[c])) for c in columns)
        key_size = draw(st.integers(1, len(props)))
        key = tuple(p.name for p in draw(st.permutations(props))[:key_size])
        name = set_names[table]
        sets.append(EntitySet(name, "public", table, EntityType(name, props, key)))
    return Model("R2SF", "Container", tuple(sets))


@settings(database=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_any_catalogue_model_renders_schema_valid_xml_and_json(model: Model) -> None:
    root = etree.fromstring(metadata_xml(model))
    assert xml_errors(root) == []
    assert every_type_has_a_key(root)
    assert json_errors(metadata_json(model)) == []
