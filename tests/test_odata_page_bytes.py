"""Pages bounded by bytes as well as rows, over real HTTP: wide rows never make an answer that
Salesforce refuses (8 MB per response, spec §7), and following the nextLinks still returns
every row exactly once, whether the page was server-driven (keyset) or a client's `$top`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live import serve
from tests.test_odata_read import column

SALESFORCE_LIMIT = 8_000_000  # bytes in one response, the smaller reading of "8 MB"
BUDGET = 6_000_000  # the default [odata] max_page_bytes

# 2,000 rows of about 10 KB of JSON each (20 MB in all): a 1,000-row page would be 10 MB.
# The text is mostly 'é', two bytes in UTF-8: a guard counting characters instead of bytes
# would let pages grow to twice the budget. Sizes vary, so pages end at different rows.
SETUP = """
create table wide (
    id int primary key,
    grp int,
    body text not null
);
insert into wide
select i,
       case when i % 6 = 0 then null else i % 5 end,
       i::text || ' ' || repeat('é', 4500 + (i * 37) % 1000)
from generate_series(1, 2000) as i;
create table small (id int primary key, name text not null);
insert into small select i, 'row ' || i from generate_series(1, 50) as i;
-- A varchar(20) whose JSON is six times its length (control characters are escaped as
-- \\u0001): the budget counts the bytes sent, whatever the declared lengths.
create table coded (id int primary key, code varchar(20) not null);
insert into coded select i, repeat(chr(1), 20) from generate_series(1, 60) as i;
"""
TOML = """
[odata]
expose = ["public.*"]
page_size = 1000
"""
HEADERS = {"Accept-Encoding": "identity"}  # sizes as Salesforce would receive them


def value_bytes(raw: bytes) -> bytes:
    """The `value` array exactly as sent (the service writes it before any nextLink)."""
    start = raw.index(b'"value":') + len(b'"value":')
    link = raw.find(b',"@odata.nextLink":')
    return raw[start : link if link >= 0 else len(raw) - 1]


def follow(client: httpx.Client, url: str) -> tuple[list[Any], list[tuple[bytes, Any]]]:
    """Every row reached by following nextLinks, and (response bytes, body) of each page."""
    rows: list[Any] = []
    pages: list[tuple[bytes, Any]] = []
    next_url: str | None = url
    while next_url:
        r = client.get(next_url, headers=HEADERS)
        assert r.status_code == 200, r.text[:500]
        assert "content-encoding" not in r.headers
        body = r.json()
        pages.append((r.content, body))
        rows.extend(body["value"])
        next_url = body.get("@odata.nextLink")
        assert len(pages) < 100, "the nextLinks do not end"
    return rows, pages


def check_pages(pages: list[tuple[bytes, Any]], budget: int = BUDGET) -> None:
    for raw, body in pages:
        assert len(raw) < SALESFORCE_LIMIT
        assert len(value_bytes(raw)) <= budget or len(body["value"]) == 1


def ids(rows: list[Any]) -> list[int]:
    return [r["id"] for r in rows]


def test_server_driven_pages_stay_under_8_mb_and_return_every_row_once(
    client: httpx.Client, db: str
) -> None:
    rows, pages = follow(client, "/wide?$select=id,body&$count=true")
    check_pages(pages)
    assert ids(rows) == column(db, "select id from wide order by id")
    assert len(pages) >= 4  # 20 MB cannot come in fewer pages of at most 6 MB
    assert all(len(b["value"]) < 1000 for _, b in pages)  # every page cut by bytes, not rows
    assert all(b["@odata.count"] == 2000 for _, b in pages)
    assert all("$skiptoken=" in b["@odata.nextLink"] for _, b in pages[:-1])


def test_keyset_continues_after_the_cut_row_under_a_nullable_descending_sort(
    client: httpx.Client, db: str
) -> None:
    rows, pages = follow(client, "/wide?$select=id,grp,body&$orderby=grp+desc&$filter=id+ne+7")
    check_pages(pages)
    expected = column(db, "select id from wide where id <> 7 order by grp desc nulls last, id")
    assert ids(rows) == expected


def test_a_client_top_page_cut_by_bytes_links_to_the_rest_by_skip(
    client: httpx.Client, db: str
) -> None:
    # Salesforce's client-driven $top=2001 cannot fit in 8 MB here: the page ends early and its
    # nextLink asks for exactly the rest of the $top, from where the page ended.
    rows, pages = follow(
        client, "/wide?$select=id,body&$orderby=grp&$count=true&$skip=40&$top=2001"
    )
    check_pages(pages)
    assert ids(rows) == column(db, "select id from wide order by grp nulls first, id offset 40")
    first = pages[0][1]
    cut = len(first["value"])
    assert 0 < cut < 2001
    assert first["@odata.nextLink"].endswith(f"$skip={40 + cut}&$top={2001 - cut}")
    assert all(b["@odata.count"] == 2000 for _, b in pages)


def test_a_client_top_page_cut_by_bytes_never_returns_more_than_the_top(
    client: httpx.Client, db: str
) -> None:
    rows, pages = follow(client, "/wide?$select=id,body&$skip=100&$top=1500")
    check_pages(pages)
    assert len(pages) >= 2
    assert ids(rows) == column(db, "select id from wide order by id offset 100 limit 1500")
    assert "@odata.nextLink" not in pages[-1][1]


def test_a_top_beyond_the_client_maximum_pages_by_keyset_within_the_budget(
    client: httpx.Client, db: str
) -> None:
    rows, pages = follow(client, "/wide?$select=id,body&$top=2002&$filter=id+gt+10")
    check_pages(pages)
    assert ids(rows) == column(db, "select id from wide where id > 10 order by id")


def test_narrow_pages_are_not_cut(client: httpx.Client, db: str) -> None:
    # Without the wide column, 1,000 rows are ~20 KB: the row limit ends the page, not bytes.
    rows, pages = follow(client, "/wide?$select=id,grp")
    assert [len(b["value"]) for _, b in pages] == [1000, 1000]
    assert ids(rows) == column(db, "select id from wide order by id")


@pytest.fixture(scope="module")
def tiny_client(db: str) -> Iterator[httpx.Client]:
    toml = TOML + "max_page_bytes = 1000\n"
    with (
        serve(db, toml) as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=60) as c,
    ):
        yield c


def test_a_row_larger_than_the_budget_comes_alone(tiny_client: httpx.Client, db: str) -> None:
    # Each row (~10 KB) exceeds a 1,000-byte budget: one row per page, never an empty page.
    rows, pages = follow(tiny_client, "/wide?$select=id,body&$filter=id+le+5")
    assert [len(b["value"]) for _, b in pages] == [1, 1, 1, 1, 1]
    assert ids(rows) == [1, 2, 3, 4, 5]


def test_the_budget_setting_decides_where_pages_end(tiny_client: httpx.Client, db: str) -> None:
    # The 50 rows of `small` take ~1,200 bytes of JSON; a 1,000-byte budget ends the first page
    # at the last row that fits, and the second page holds the rest.
    rows, pages = follow(tiny_client, "/small")
    assert ids(rows) == column(db, "select id from small order by id")
    assert len(pages) == 2
    check_pages(pages, budget=1000)
    first = value_bytes(pages[0][0])
    next_row = json.dumps(pages[1][1]["value"][0], separators=(",", ":")).encode()
    assert len(first) + len(b",") + len(next_row) > 1000  # the next row would not have fitted
    # A client's $top that fits stays one page.
    rows, pages = follow(tiny_client, "/small?$top=26&$skip=20")
    assert len(pages) == 1 and ids(rows) == list(range(21, 47))


def test_the_budget_counts_escaped_json_bytes_not_characters(
    tiny_client: httpx.Client, db: str
) -> None:
    # 26 rows of varchar(20) are 26 * 20 characters, but ~3,500 bytes of JSON: more than 1,000.
    rows, pages = follow(tiny_client, "/coded?$top=26&$skip=3")
    check_pages(pages, budget=1000)
    assert len(pages) > 1
    assert ids(rows) == list(range(4, 30))
    assert rows[0]["code"] == "\x01" * 20
