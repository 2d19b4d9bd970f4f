"""Edge cases of the read surface over real HTTP: `$search` words that are also keywords, how
phrases match, and numbers written with OData 2.0 type suffixes. Answers are checked against
PostgreSQL directly or against the documented rule (docs/operators.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Databases

SETUP_SQL = """
create table state (
    code varchar(2) primary key,
    name varchar(40) not null,
    motto varchar(80)
);
insert into state values
    ('OR', 'Oregon', 'She flies with her own wings'),
    ('NY', 'New York', 'Excelsior'),
    ('TX', 'Texas', null),
    ('ND', 'North Dakota', 'Liberty and union, now and forever'),
    ('ME', 'Maine', 'Dirigo'),
    ('KS', 'Kansas', 'To the stars through difficulties'),
    ('XN', 'Notown', 'Knot AND bolt');

create table product (
    id int primary key,
    name varchar(60) not null,
    note varchar(60)
);
insert into product values
    (1, 'Big Apple', null),
    (2, 'apple big', null),
    (3, 'big', 'apple pie'),
    (4, 'the big apple store', 'x'),
    (5, 'pineapple bigger', null),
    (6, 'big  apple', null),
    (7, 'Banana', 'big');

create table measure (
    id bigint primary key,
    ratio float8 not null,
    weight real not null,
    amount numeric(12,2) not null
);
insert into measure values
    (100000, 2.5, 1.5, 10.00),
    (100001, 0.5, 0.1, 20.50),
    (5000000000, 3.75, 2.0, 10.00);
"""

TOML = """
[odata]
path = "/odata/v4"
expose = ["public.*"]
"""


@pytest.fixture(scope="module")
def db(databases: Databases) -> str:
    return databases.create(SETUP_SQL)


@pytest.fixture(scope="module")
def server(db: str) -> Iterator[str]:
    from tests.live import serve

    with serve(db, TOML) as (base, _app):
        yield base


def sql_column(db: str, query: str, *args: Any) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(db)
        try:
            return [r[0] for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


def values(client: httpx.Client, url: str, key: str) -> list[Any]:
    r = client.get(url)
    assert r.status_code == 200, r.text
    return [row[key] for row in r.json()["value"]]


# --- $search: AND, OR and NOT as search words ------------------------------------------------


def has(word: str) -> str:
    """SQL for "some string property of state contains `word`" (case-insensitive, the default),
    with OData's null semantics: a NULL property contains nothing."""
    escaped = word.replace("'", "''")
    return (
        "("
        + " or ".join(f"coalesce({c}, '') ilike '%{escaped}%'" for c in ("code", "name", "motto"))
        + ")"
    )


@pytest.mark.parametrize(
    ("search", "where"),
    [
        ("OR", has("OR")),  # Oregon's state code, alone: a word, not a dangling operator
        ("AND", has("AND")),
        ("NOT", has("NOT")),
        ('"OR"', has("OR")),  # a quoted phrase is always a word
        ("NOT OR", f"not {has('OR')}"),  # NOT applies to the word OR
        ("NOT NOT", f"not {has('NOT')}"),
        ("Oregon OR", f"{has('Oregon')} and {has('OR')}"),  # nothing after OR: a word
        ("OR Oregon", f"{has('OR')} and {has('Oregon')}"),  # nothing before OR: a word
        ("Texas OR OR", f"{has('Texas')} or {has('OR')}"),  # after an operator: a word
        ("AND OR NOT", f"{has('AND')} or {has('NOT')}"),  # the OASIS test case
        ("Texas OR Maine", f"{has('Texas')} or {has('Maine')}"),  # still an operator
        ("(Knot AND)", f"{has('Knot')} and {has('AND')}"),  # before ')': a word
    ],
)
def test_search_keywords_without_operands_search_for_the_word(
    client: httpx.Client, db: str, search: str, where: str
) -> None:
    expected = sql_column(db, f"select code from state where {where} order by code")
    total = sql_column(db, "select count(*) from state")[0]
    assert 0 < len(expected) < total  # the case tells a search from "everything" or "nothing"
    got = values(client, f"/state?$search={search}&$select=code&$orderby=code", "code")
    assert got == expected


def test_search_for_or_finds_oregon_by_its_state_code(client: httpx.Client) -> None:
    got = values(client, "/state?$search=OR&$select=code&$count=true&$top=25", "code")
    assert "OR" in got and "TX" not in got


# --- $search: words and phrases ----------------------------------------------------------------


def test_search_words_must_each_appear_somewhere_in_the_row(client: httpx.Client) -> None:
    # `big apple`: both words, in any order, in any string property, inside other words too.
    got = values(client, "/product?$search=big apple&$select=id&$orderby=id", "id")
    assert got == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("phrase", ['"big apple"', '"Big Apple"', '"BIG APPLE"'])
def test_search_phrase_must_appear_as_written_in_one_property(
    client: httpx.Client, phrase: str
) -> None:
    # Not 2 (other order), 3 (split across properties), 6 (two spaces); case does not matter.
    got = values(client, f"/product?$search={phrase}&$select=id&$orderby=id", "id")
    assert got == [1, 4]


# --- numbers with OData 2.0 type suffixes ------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "where"),
    [
        ("id eq 100000L", "id = 100000"),
        ("id eq 100000l", "id = 100000"),
        ("id ge 5000000000L", "id >= 5000000000"),
        ("ratio lt 2.5D", "ratio < 2.5"),
        ("ratio ge 2.5d", "ratio >= 2.5"),
        ("weight le 1.5F", "weight <= 1.5"),
        ("weight eq 0.1f", "weight = 0.1::real"),  # the Single value 0.1F, not the Double 0.1
        ("amount eq 10.0M", "amount = 10.0"),
        ("amount gt 10m", "amount > 10"),
        ("amount mul 2M gt 40.5D", "amount * 2 > 40.5"),
        ("id in (100001L, 5000000000L)", "id in (100001, 5000000000)"),
    ],
)
def test_filter_numbers_with_type_suffixes_mean_their_v4_values(
    client: httpx.Client, db: str, filter_: str, where: str
) -> None:
    expected = sql_column(db, f"select id from measure where {where} order by id")
    assert expected  # every case selects something
    assert values(client, f"/measure?$filter={filter_}&$select=id&$orderby=id", "id") == expected


@pytest.mark.parametrize(
    "path", ["/measure(5000000000L)", "/measure/5000000000L", "/measure(id=5000000000l)"]
)
def test_key_with_a_type_suffix_addresses_the_entity(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == 5000000000


@pytest.mark.parametrize(
    ("url", "target", "message"),
    [
        ("/measure?$filter=id eq 2.5L", "$filter", "needs a whole number; write 2.5 without it"),
        ("/measure(2.5L)", "key", "needs a whole number; write 2.5 without it"),
        ("/measure?$filter=ratio lt 1e999D", "$filter", "'1e999D' is out of range for Edm.Double"),
        ("/measure?$filter=amount eq 1e999999M", "$filter", "out of range for Edm.Decimal"),
        ("/measure?$filter=id eq 100Q", "$filter", "malformed number '100Q'"),
    ],
)
def test_bad_suffixed_numbers_are_400_naming_the_option(
    client: httpx.Client, url: str, target: str, message: str
) -> None:
    r = client.get(url)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["target"] == target and message in error["message"], error
