"""The OData read surface over real HTTP, each answer checked against PostgreSQL directly."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from lxml import etree

SPEC = Path(__file__).resolve().parent / "spec" / "odata"  # vendored: tests/spec/README.md
AUTH = ("sf", "secret")


def sql(db: str, query: str, *args: Any) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(db)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def column(db: str, query: str, *args: Any) -> list[Any]:
    return [r[0] for r in sql(db, query, *args)]


def get(client: httpx.Client, url: str, **kw: Any) -> Any:
    r = client.get(url, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["odata-version"] == "4.0"
    return r.json()


# --- service document and $metadata -------------------------------------------------------------


def test_service_document_lists_every_exposed_set(client: httpx.Client) -> None:
    doc = get(client, "/")
    names = {v["name"] for v in doc["value"]}
    assert {"Category", "Sales", "SalesLine", "PaidSales", "region_totals", "typed"} <= names
    assert "no_key" not in names  # a table without a primary key cannot be exposed
    assert doc["@odata.context"].endswith("/odata/v4/$metadata")


def test_metadata_is_xml_valid_against_the_oasis_schema(client: httpx.Client) -> None:
    r = client.get("/$metadata", headers={"Accept": "application/json, text/plain, */*"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    schema = etree.XMLSchema(etree.parse(str(SPEC / "edmx.xsd")))
    doc = etree.fromstring(r.content)
    schema.assertValid(doc)
    ns = {"edm": "http://docs.oasis-open.org/odata/ns/edm"}
    line = doc.find(".//edm:EntityType[@Name='SalesLine']", ns)
    assert [p.get("Name") for p in line.findall("edm:Key/edm:PropertyRef", ns)] == [
        "OrderID",
        "LineNo",
    ]
    amount = doc.find(".//edm:EntityType[@Name='Sales']/edm:Property[@Name='Amount']", ns)
    assert (amount.get("Type"), amount.get("Precision"), amount.get("Scale")) == (
        "Edm.Decimal",
        "12",
        "2",
    )


@pytest.mark.parametrize(
    ("url", "headers", "version"),
    [
        # CSDL JSON is a 4.01 format, but an answer may not exceed the client's OData-MaxVersion
        # (4.0 when none is sent; OData Protocol §8.2.7).
        ("/$metadata?$format=json", {}, "4.0"),
        ("/$metadata?$format=application/json", {"OData-MaxVersion": "4.0"}, "4.0"),
        ("/$metadata?$format=json", {"OData-MaxVersion": "4.01"}, "4.01"),
        ("/$metadata", {"Accept": "application/json", "OData-MaxVersion": "4.01"}, "4.01"),
        (
            "/$metadata",
            {"Accept": "application/json, */*;q=0.5", "OData-MaxVersion": "4.01"},
            "4.01",
        ),
    ],
)
def test_metadata_as_csdl_json_when_asked(
    client: httpx.Client, url: str, headers: dict[str, str], version: str
) -> None:
    r = client.get(url, headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get_list("OData-Version") == [version]
    doc = r.json()
    assert doc["$Version"] == "4.01"
    assert doc["r2sf"]["Sales"]["$Key"] == ["SaleID"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "application/json"},  # no OData-MaxVersion: a 4.0 client
        {"Accept": "application/json", "OData-MaxVersion": "4.0"},
        {"Accept": "application/json;odata.metadata=minimal", "OData-MaxVersion": "4.0"},
        # 4.01, but XML is as welcome as JSON (or refused JSON): XML, the format every client reads
        {"Accept": "application/json, application/xml", "OData-MaxVersion": "4.01"},
        {"Accept": "application/json, */*", "OData-MaxVersion": "4.01"},
        {"Accept": "application/json;q=0, */*", "OData-MaxVersion": "4.01"},
    ],
)
def test_metadata_is_csdl_xml_unless_a_4_01_client_prefers_json(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    r = client.get("/$metadata", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(r.content)
    assert root.tag == "{http://docs.oasis-open.org/odata/ns/edmx}Edmx"
    assert root.get("Version") == "4.0"


def test_metadata_types_follow_the_postgresql_columns(client: httpx.Client) -> None:
    doc = client.get("/$metadata?$format=json").json()
    typed = doc["r2sf"]["typed"]
    types = {k: v.get("$Type", "Edm.String") for k, v in typed.items() if not k.startswith("$")}
    assert types["big"] == "Edm.Int64"
    assert types["dbl"] == "Edm.Double"
    assert types["tstz"] == "Edm.DateTimeOffset" and types["ts"] == "Edm.DateTimeOffset"
    assert types["guid"] == "Edm.Guid" and types["bin"] == "Edm.Binary"
    # Types Salesforce cannot take are exposed as their text form.
    assert types["doc"] == types["tags"] == types["span"] == types["feeling"] == "Edm.String"
    assert typed["loose"]["$Precision"] <= 18
    assert typed["fixed"]["$MaxLength"] == 3


def test_odd_names_are_made_salesforce_safe(client: httpx.Client) -> None:
    doc = client.get("/$metadata?$format=json").json()
    sets = doc["r2sf"]["Default"]
    odd = [name for name in sets if name.lower().startswith("order")]
    assert len(odd) == 1 and " " not in odd[0]
    props = [k for k in doc["r2sf"][odd[0]] if not k.startswith("$")]
    assert all(" " not in p and "__" not in p for p in props)


# --- the request shapes of spec §10 ---------------------------------------------------------------


def test_select_count_top(client: httpx.Client, db: str) -> None:
    body = get(client, "/Category?$select=CategoryID,Name&$count=true&$top=26")
    assert body["@odata.count"] == column(db, "select count(*) from category")[0]
    assert [r["CategoryID"] for r in body["value"]] == column(
        db, 'select "CategoryID" from category order by 1'
    )
    assert all(set(r) == {"CategoryID", "Name"} for r in body["value"])
    assert body["@odata.context"].endswith("$metadata#Category(CategoryID,Name)")


def test_count_false_leaves_out_the_count(client: httpx.Client) -> None:
    body = get(client, "/Category?$select=CategoryID,Name&$count=false&$top=26")
    assert "@odata.count" not in body


def test_orderby_desc_with_skip(client: httpx.Client, db: str) -> None:
    body = get(
        client, "/Category?$orderby=Name+desc&$select=CategoryID,Name&$count=true&$skip=2&$top=3"
    )
    expected = column(
        db, 'select "Name" from category order by "Name" collate "default" desc offset 2 limit 3'
    )
    assert [r["Name"] for r in body["value"]] == expected


def ids(body: Any, key: str = "SaleID") -> list[Any]:
    return [r[key] for r in body["value"]]


def test_filter_eq_string(client: httpx.Client, db: str) -> None:
    body = get(client, "/Sales?$select=SaleID,Region&$count=true&$filter=Region+eq+'USA'&$top=26")
    expected = column(db, """select "SaleID" from sales where "Region" = 'USA' order by 1""")
    assert body["@odata.count"] == len(expected)
    assert ids(body) == expected[:26]


def test_filter_or_and_boolean(client: httpx.Client, db: str) -> None:
    url = "/Sales?$select=SaleID&$count=true&$filter=(Region+eq+'USA'+or+Region+eq+'CA')+and+IsPaid+eq+false&$top=26"
    body = get(client, url)
    expected = column(
        db,
        """select "SaleID" from sales where "Region" in ('USA','CA') and not "IsPaid" order by 1""",
    )
    assert body["@odata.count"] == len(expected)
    assert ids(body) == expected[:26]


def test_filter_unquoted_date_range(client: httpx.Client, db: str) -> None:
    body = get(
        client,
        "/Sales?$select=SaleID,SaleDate&$count=true&$filter=SaleDate+ge+2024-01-01+and+SaleDate+le+2024-12-31&$top=26",
    )
    expected = sql(
        db,
        """select "SaleID", "SaleDate" from sales where "SaleDate" between '2024-01-01' and '2024-12-31' order by 1""",
    )
    assert body["@odata.count"] == len(expected)
    assert [(r["SaleID"], r["SaleDate"]) for r in body["value"]] == [
        (a, b.isoformat()) for a, b in expected[:26]
    ]


@pytest.mark.parametrize(
    "literal", ["2024-06-30T23:59:59Z", "2024-06-30T23:59:59.000Z", "2024-07-01T01:59:59%2B02:00"]
)
def test_filter_datetime_with_zone_forms(client: httpx.Client, db: str, literal: str) -> None:
    body = get(
        client,
        f"/Sales?$select=SaleID,ShippedAt&$count=true&$filter=ShippedAt+lt+{literal}&$top=26",
    )
    expected = column(
        db, """select "SaleID" from sales where "ShippedAt" < '2024-06-30T23:59:59Z' order by 1"""
    )
    assert body["@odata.count"] == len(expected)
    assert ids(body) == expected[:26]


def test_filter_eq_null(client: httpx.Client, db: str) -> None:
    body = get(client, "/Sales?$select=SaleID,Notes&$count=true&$filter=Notes+eq+null&$top=26")
    expected = column(db, """select "SaleID" from sales where "Notes" is null order by 1""")
    assert body["@odata.count"] == len(expected) and ids(body) == expected[:26]
    assert all(r["Notes"] is None for r in body["value"])


def test_startswith_eq_true_is_case_insensitive(client: httpx.Client, db: str) -> None:
    body = get(
        client,
        "/Category?$select=CategoryID,Name&$count=true&$filter=startswith(Name,'Ac')+eq+true&$top=26",
    )
    expected = column(
        db, """select "CategoryID" from category where lower("Name") like 'ac%' order by 1"""
    )
    assert ids(body, "CategoryID") == expected and len(expected) == 3


def test_not_contains_keeps_rows_where_the_value_is_null(client: httpx.Client, db: str) -> None:
    body = get(
        client,
        "/Category?$select=CategoryID&$count=true&$filter=not+(contains(Description,'acme')+eq+true)&$top=26",
    )
    expected = column(
        db,
        """select "CategoryID" from category
        where "Description" is null or "Description" not ilike '%acme%' order by 1""",
    )
    assert ids(body, "CategoryID") == expected
    assert 3 in expected  # category 3 has no description


def test_contains_eq_false_excludes_null_values(client: httpx.Client, db: str) -> None:
    body = get(client, "/Category?$select=CategoryID&$filter=contains(Description,'acme')+eq+false")
    expected = column(
        db,
        """select "CategoryID" from category where "Description" not ilike '%acme%' order by 1""",
    )
    assert ids(body, "CategoryID") == expected and 3 not in expected


def test_salesforce_search_as_or_chain_of_contains(client: httpx.Client, db: str) -> None:
    url = "/Category?$select=CategoryID,Description,Name&$count=true&$filter=contains(Description,'Acme')+eq+true+or+contains(Name,'Acme')+eq+true&$top=25"
    body = get(client, url)
    expected = column(
        db,
        """select "CategoryID" from category
        where "Description" ilike '%acme%' or "Name" ilike '%acme%' order by 1""",
    )
    assert ids(body, "CategoryID") == expected == [2, 3]


def test_free_text_search_matches_every_word_across_string_properties(
    client: httpx.Client, db: str
) -> None:
    body = get(
        client,
        "/Category?$select=CategoryID,Description,Name&$count=true&$search=Sales+Marketing&$top=25",
    )
    expected = column(
        db,
        """select "CategoryID" from category where
        (coalesce("Name",'') || ' ' || coalesce("Description",'')) ilike '%sales%' and
        (coalesce("Name",'') || ' ' || coalesce("Description",'')) ilike '%marketing%' order by 1""",
    )
    assert ids(body, "CategoryID") == expected == [6, 7]
    assert body["@odata.count"] == 2


def test_search_on_a_set_without_strings_matches_nothing(client: httpx.Client) -> None:
    # Ignoring $search (as some servers do) would return every row: wrong for Salesforce search.
    body = get(client, "/numbers_only?$search=10&$count=true")
    assert body["@odata.count"] == 0 and body["value"] == []


def test_search_term_matches_like_postgres_ilike(client: httpx.Client, db: str) -> None:
    body = get(client, "/SalesLine?$search=p1&$count=true&$top=100")
    expected = sql(
        db,
        """select "OrderID", "LineNo" from sales_line where "Product" ilike '%p1%' order by 1, 2""",
    )
    assert body["@odata.count"] == len(expected) > 0
    assert [(r["OrderID"], r["LineNo"]) for r in body["value"]] == [tuple(e) for e in expected]


def test_composite_key_filter(client: httpx.Client) -> None:
    body = get(client, "/SalesLine?$select=OrderID,LineNo&$filter=OrderID+eq+10248+and+LineNo+eq+1")
    assert body["value"] == [{"OrderID": 10248, "LineNo": 1}]


# --- entity access ----------------------------------------------------------------------------


def test_entity_by_integer_key(client: httpx.Client, db: str) -> None:
    body = get(client, "/Category(1)")
    row = sql(db, 'select * from category where "CategoryID" = 1')[0]
    assert body["Name"] == row["Name"] and body["CategoryID"] == 1
    assert body["@odata.context"].endswith("$metadata#Category/$entity")


def test_entity_by_string_key_and_key_as_segment(client: httpx.Client) -> None:
    assert get(client, "/Sales('S-0001')")["SaleID"] == "S-0001"
    assert get(client, "/Sales/S-0002")["SaleID"] == "S-0002"
    assert get(client, "/Category/4")["Name"] == "O'Brien & Sons"


def test_entity_by_composite_key(client: httpx.Client) -> None:
    body = get(client, "/SalesLine(OrderID=10248,LineNo=1)")
    assert (body["OrderID"], body["LineNo"]) == (10248, 1)


def test_missing_entity_is_404(client: httpx.Client) -> None:
    r = client.get("/Category(999)")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "EntityNotFound"


def test_property_and_raw_value(client: httpx.Client) -> None:
    body = get(client, "/Sales('S-0002')/Amount")
    assert body["value"] == 25.0 and body["@odata.context"].endswith("Sales('S-0002')/Amount")
    r = client.get("/Sales('S-0002')/Amount/$value")
    assert (
        r.status_code == 200
        and r.text == "25.00"
        and r.headers["content-type"].startswith("text/plain")
    )
    assert client.get("/Sales('S-0005')/Notes").status_code == 204  # null value


def test_count_segment_honours_filter(client: httpx.Client, db: str) -> None:
    r = client.get("/Sales/$count?$filter=IsPaid+eq+true")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert int(r.text) == column(db, 'select count(*) from sales where "IsPaid"')[0]


# --- paging -------------------------------------------------------------------------------------


def follow(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None
) -> tuple[list[Any], list[Any]]:
    rows: list[Any] = []
    pages: list[Any] = []
    while url:
        body = get(client, url, headers=headers or {})
        pages.append(body)
        rows.extend(body["value"])
        url = body.get("@odata.nextLink")
    return rows, pages


def test_server_driven_paging_visits_every_row_once(client: httpx.Client, db: str) -> None:
    rows, pages = follow(client, "/Sales?$select=SaleID,Amount&$count=true")
    expected = column(db, 'select "SaleID" from sales order by 1')
    assert [r["SaleID"] for r in rows] == expected
    assert [len(p["value"]) for p in pages] == [1000, 1000, 600]
    assert all(p["@odata.count"] == len(expected) for p in pages)
    assert all(p["@odata.nextLink"].startswith("http://") for p in pages[:-1])


def test_paging_with_nullable_descending_sort_matches_postgres(
    client: httpx.Client, db: str
) -> None:
    rows, _ = follow(
        client, "/Sales?$select=SaleID,Amount&$orderby=Amount+desc&$filter=Quantity+ne+0"
    )
    expected = column(
        db,
        """select "SaleID" from sales where "Quantity" <> 0
        order by "Amount" desc nulls last, "SaleID" """,
    )
    assert [r["SaleID"] for r in rows] == expected


def test_paging_with_nullable_ascending_sort_puts_nulls_first(
    client: httpx.Client, db: str
) -> None:
    rows, _ = follow(client, "/Sales?$select=SaleID,Region&$orderby=Region,SaleDate+desc")
    expected = column(
        db,
        """select "SaleID" from sales
        order by "Region" nulls first, "SaleDate" desc nulls last, "SaleID" """,
    )
    assert [r["SaleID"] for r in rows] == expected


def test_top_above_page_size_is_delivered_over_pages_exactly(client: httpx.Client, db: str) -> None:
    rows, pages = follow(client, "/Sales?$select=SaleID&$top=2100&$skip=10")
    expected = column(db, 'select "SaleID" from sales order by 1 offset 10 limit 2100')
    assert [r["SaleID"] for r in rows] == expected
    assert [len(p["value"]) for p in pages] == [1000, 1000, 100]


@pytest.mark.parametrize("top", [1001, 2000, 2001])
def test_client_top_up_to_2001_is_one_page_whatever_the_page_size(
    client: httpx.Client, db: str, top: int
) -> None:
    # page_size is 1000: a client-driven $top up to 2,001 is still answered whole (spec §4).
    body = get(client, f"/Sales?$select=SaleID&$orderby=Region+desc&$skip=300&$top={top}")
    expected = column(
        db,
        'select "SaleID" from sales order by "Region" desc nulls last, "SaleID" offset 300 limit $1',
        top,
    )
    assert [r["SaleID"] for r in body["value"]] == expected
    assert "@odata.nextLink" not in body


def test_salesforce_paging_by_skip_with_top_2001_sees_every_row_once(
    client: httpx.Client, db: str
) -> None:
    # With server-driven paging off, Salesforce asks for 2,000 rows + 1 and moves on by $skip,
    # never following a nextLink: a short page would make it skip rows.
    seen: list[str] = []
    skip = 0
    while True:
        body = get(client, f"/Sales?$select=SaleID&$count=true&$skip={skip}&$top=2001")
        rows = [r["SaleID"] for r in body["value"]]
        seen.extend(rows[:2000])
        if len(rows) <= 2000:
            break
        skip += 2000
    assert seen == column(db, 'select "SaleID" from sales order by 1')


def test_top_above_2001_is_server_driven_in_pages_of_page_size(
    client: httpx.Client, db: str
) -> None:
    rows, pages = follow(client, "/Sales?$select=SaleID&$top=2002")
    assert [r["SaleID"] for r in rows] == column(
        db, 'select "SaleID" from sales order by 1 limit 2002'
    )
    assert [len(p["value"]) for p in pages] == [1000, 1000, 2]


def test_next_link_respects_forwarded_proto_and_host(client: httpx.Client) -> None:
    body = get(
        client,
        "/Sales?$select=SaleID",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "r2sf.example.com"},
    )
    assert body["@odata.nextLink"].startswith("https://r2sf.example.com/odata/v4/Sales?")
    assert body["@odata.context"].startswith("https://r2sf.example.com/odata/v4/$metadata#")


def test_next_link_keeps_the_format_asked_for(client: httpx.Client) -> None:
    url = "/Sales?$select=SaleID&$format=application/json;odata.metadata=none"
    body = get(client, url)
    assert "@odata.context" not in body  # metadata=none honoured on the first page
    link = body["@odata.nextLink"]
    assert "$format=application/json" in link
    second = get(client, link)
    assert "@odata.context" not in second and second["value"]


def test_keyset_pages_are_stable_while_rows_are_inserted(client: httpx.Client, db: str) -> None:
    first = get(client, "/Sales?$select=SaleID")
    sql(db, """insert into sales ("SaleID", "IsPaid", "Quantity") values ('S-0000a', true, 1)""")
    try:
        second = get(client, first["@odata.nextLink"])
    finally:
        sql(db, """delete from sales where "SaleID" = 'S-0000a'""")
    # An offset-based second page would repeat S-1000; a keyset page continues after it.
    assert second["value"][0]["SaleID"] == "S-1001"


def test_tampered_skiptoken_is_a_400(client: httpx.Client) -> None:
    link = get(client, "/Sales?$select=SaleID")["@odata.nextLink"]
    r = client.get(link.replace("$skiptoken=", "$skiptoken=x"))
    assert r.status_code == 400
    other = link.replace("$select=SaleID", "$select=SaleID&$filter=IsPaid")
    assert client.get(other).status_code == 400  # a token is bound to its query


# --- values and formats -------------------------------------------------------------------------


def test_value_formats(client: httpx.Client) -> None:
    one = get(client, "/typed(1)")
    assert one["big"] == 9007199254740993  # exact, not rounded through a double
    assert one["day"] == "2024-02-29"
    assert one["ts"] == "2024-05-01T10:00:00Z"  # timestamp without time zone is taken as UTC
    assert one["tstz"] == "2024-05-01T10:00:00Z"
    assert one["tod"] == "13:20:00"
    assert one["guid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert base64.urlsafe_b64decode(one["bin"] + "==") == b"\xfb\xff\x00"
    assert "+" not in one["bin"] and "/" not in one["bin"]
    assert one["doc"] == '{"a": 1}' and one["tags"] == "{x,y}" and one["feeling"] == "happy"
    two = get(client, "/typed(2)")
    assert (two["dbl"], two["real"]) == ("NaN", "INF")  # `real_` is renamed `real`
    assert get(client, "/typed(3)")["dbl"] == "-INF"
    assert get(client, "/typed(3)")["ts"] == "2000-01-01T00:00:00.123456Z"


def test_decimal_keeps_its_scale_in_the_raw_json(client: httpx.Client) -> None:
    r = client.get("/typed(1)?$select=dec")
    assert '"dec":1234.5000' in r.text
    r = client.get(
        "/typed(1)?$select=dec,big", headers={"Accept": "application/json;IEEE754Compatible=true"}
    )
    assert r.json()["dec"] == "1234.5000" and r.json()["big"] == "9007199254740993"
    assert "IEEE754Compatible=true" in r.headers["content-type"]


def test_properties_come_in_metadata_order_whatever_the_select_order(client: httpx.Client) -> None:
    r = client.get("/Sales?$select=Amount,SaleID,Region&$top=1")
    assert list(r.json()["value"][0]) == ["SaleID", "Region", "Amount"]
    assert r.json()["@odata.context"].endswith("#Sales(Amount,SaleID,Region)")


def test_metadata_none_and_full(client: httpx.Client) -> None:
    none = get(
        client, "/Category?$top=1", headers={"Accept": "application/json;odata.metadata=none"}
    )
    assert "@odata.context" not in none
    full = get(
        client, "/Category?$top=1", headers={"Accept": "application/json;odata.metadata=full"}
    )
    row = full["value"][0]
    assert row["@odata.type"] == "#r2sf.Category" and row["@odata.id"] == "Category(1)"


def test_gzip_when_accepted(client: httpx.Client) -> None:
    r = client.get("/Sales?$top=200", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip"
    assert len(r.json()["value"]) == 200  # httpx decompresses


# --- query option syntax ------------------------------------------------------------------------


def test_plus_is_a_space_and_encoded_plus_is_a_plus(client: httpx.Client, db: str) -> None:
    plus = get(client, "/Category?$filter=Name+eq+'Beverages'")
    assert ids(plus, "CategoryID") == [1]
    encoded = get(
        client, "/Category?$filter=" + quote("startswith(Name,'O''Brien & ')", safe="(),'")
    )
    assert ids(encoded, "CategoryID") == [4]


def test_option_names_are_case_insensitive_and_dollar_is_optional(client: httpx.Client) -> None:
    a = get(client, "/Category?$select=CategoryID&$top=2")
    b = get(client, "/Category?select=CategoryID&TOP=2")
    c = get(client, "/Category?$Select=CategoryID&$Top=2")
    assert a["value"] == b["value"] == c["value"]


def test_wildcards_in_contains_are_literal(client: httpx.Client) -> None:
    body = get(client, "/Category?$filter=contains(Description,'%25')+eq+true")
    assert ids(body, "CategoryID") == [4, 8]
    body = get(client, "/Category?$filter=contains(Description,'e_t')+eq+true")
    assert ids(body, "CategoryID") == []  # `_` is not a wildcard: 'test' does not match
    body = get(client, "/Category?$filter=contains(Description,'t_c')+eq+true")
    assert ids(body, "CategoryID") == [5]


# --- null semantics (OData 4.01 URL Conventions §5.1.1.1) ------------------------------------------


@pytest.mark.parametrize(
    ("odata", "where"),
    [
        ("Region ne 'USA'", """"Region" is distinct from 'USA'"""),
        ("Region gt 'CA'", """"Region" > 'CA'"""),
        ("not (Region gt 'CA')", """"Region" <= 'CA' or "Region" is null"""),
        ("not (Region eq 'USA')", """"Region" is distinct from 'USA'"""),
        ("Region in ('USA', 'MX')", """"Region" in ('USA', 'MX')"""),
        ("not (Region in ('USA', 'MX'))", """"Region" not in ('USA', 'MX') or "Region" is null"""),
        (
            "Region eq 'USA' or Region eq 'MX' or Region eq null",
            """"Region" in ('USA','MX') or "Region" is null""",
        ),
        ("Amount add 10 gt 100 and Amount lt 200", """"Amount" + 10 > 100 and "Amount" < 200"""),
        ("not (Amount mul 2 ge 500)", """not coalesce("Amount" * 2 >= 500, false)"""),
        ("length(Notes) gt 9", """length("Notes") > 9"""),
        ("tolower(Region) eq 'usa'", """lower("Region") = 'usa'"""),
        (
            "year(SaleDate) eq 2024 and month(SaleDate) eq 2",
            """extract(year from "SaleDate") = 2024 and extract(month from "SaleDate") = 2""",
        ),
        ("endswith(Notes,'5') eq true", """"Notes" like '%5'"""),
        (
            "Notes ne null and not (startswith(Notes,'test') eq true)",
            """"Notes" is not null and "Notes" not ilike 'test%'""",
        ),
    ],
)
def test_filter_matches_postgres_under_odata_null_rules(
    client: httpx.Client, db: str, odata: str, where: str
) -> None:
    rows, pages = follow(client, "/Sales?$select=SaleID&$count=true&$filter=" + quote(odata))
    expected = column(db, f'select "SaleID" from sales where {where} order by 1')
    assert pages[0]["@odata.count"] == len(expected)
    assert [r["SaleID"] for r in rows] == expected


def test_long_in_chain_from_salesforce(client: httpx.Client, db: str) -> None:
    wanted = [f"S-{i:04d}" for i in range(1, 1200, 2)]
    odata = " or ".join(f"SaleID eq '{w}'" for w in wanted)
    url = "/Sales?$select=SaleID&$top=2000&$filter=" + quote(f"({odata})")
    assert len(url) > 16 * 1024
    assert ids(get(client, url)) == sorted(wanted)
