"""The SQL stage without HTTP: what a plan compiles to, and how PostgreSQL runs it.

The README promises that `Prop eq value` stays an index-friendly `=` and that Salesforce's `or`
chains become `IN`; the EXPLAIN tests hold that on a real table with the sequential scan
disabled, so only an index-usable predicate gives an index scan. Values are always bound
parameters and identifiers always quoted (odata/ident.py)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest

from odata import sql
from odata.ident import ident, qualified
from odata.plan import CollectionPlan, Lit
from odata.write import plan_write
from tests.conftest import run
from tests.model_fixture import ID, SALES, TABLE_SQL, plan_of

FMT = sql.OutputFormat()


def compiled(filter_: str | None = None, **options: str) -> sql.Statement:
    p = plan_of("Sales", filter_, **options)
    assert isinstance(p, CollectionPlan)
    return sql.collection(p, FMT)


def test_identifiers_are_quoted_and_embedded_quotes_doubled() -> None:
    assert ident("region") == '"region"'
    assert ident('we"ird') == '"we""ird"'
    assert qualified("my schema", "Sales") == '"my schema"."Sales"'


def test_eq_on_a_property_is_a_plain_equals_with_a_bound_value() -> None:
    st = compiled("Region eq 'WEST'")
    assert re.search(r't\."region" = \$\d+::text', st.sql), st.sql
    assert "IS NOT DISTINCT FROM" not in st.sql and "WEST" not in st.sql
    assert "WEST" in st.params


def test_eq_on_a_nullable_property_is_still_a_plain_equals() -> None:
    # A non-null literal is never null, so SQL's `=` already means OData's eq.
    st = compiled("Note eq 'x'")
    assert re.search(r't\."note" = \$\d+::text', st.sql), st.sql


def test_an_or_chain_is_one_in_list_of_bound_values() -> None:
    st = compiled("Region eq 'A' or Region eq 'B' or Region eq 'C'")
    assert re.search(r't\."region" IN \(\$\d+::text, \$\d+::text, \$\d+::text\)', st.sql)
    assert " OR " not in st.sql.split("WHERE", 1)[1].split("ORDER BY")[0]
    assert {"A", "B", "C"} <= set(st.params)


def test_a_value_that_looks_like_sql_is_only_ever_a_parameter() -> None:
    st = compiled("Region eq 'x'' or 1=1 --'")
    assert "1=1" not in st.sql and "x' or 1=1 --" in st.params


def test_a_column_name_with_a_quote_is_quoted_in_the_query() -> None:
    st = compiled("Odd eq 'a'")
    assert 't."we""ird" = $' in st.sql


def test_writes_bind_every_value_and_key() -> None:
    plan = plan_write(SALES, "PATCH", ((ID, Lit(7, "Edm.Int32")),), {"Region": "EAST"})
    st = sql.write(plan, FMT)
    assert st.sql.startswith('WITH changed AS (UPDATE "public"."sales" AS t SET "region" = CAST(')
    assert "EAST" not in st.sql and "EAST" in st.params and 7 in st.params


# -- on a real table -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(databases: Any) -> str:
    url: str = databases.create(
        TABLE_SQL
        + "create index sales_region on sales (region);"
        + "insert into sales (id, region, note) select g, 'R' || (g % 500), 'n' || g"
        + " from generate_series(1, 20000) g; analyze sales;"
    )
    return url


def explain(url: str, st: sql.Statement) -> str:
    async def go() -> str:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("set enable_seqscan = off")  # only an indexable predicate helps
            rows = await conn.fetch("explain " + st.sql, *st.params)
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    result: str = run(go())
    return result


@pytest.mark.parametrize(
    "filter_",
    ["Region eq 'R7'", "'R7' eq Region", "Region eq 'R7' or Region eq 'R8' or Region eq 'R9'"],
)
def test_the_filter_uses_the_index_on_the_column(table: str, filter_: str) -> None:
    plan = explain(table, compiled(filter_))
    assert "sales_region" in plan, plan


def test_a_predicate_an_index_cannot_serve_does_not_use_it(table: str) -> None:
    # The control for the test above: a contains() cannot use a btree index, so the EXPLAIN
    # check really tells the two apart.
    plan = explain(table, compiled("contains(Region, '7')"))
    assert "sales_region" not in plan, plan


def test_the_compiled_statements_run(table: str) -> None:
    async def go() -> tuple[Any, Any]:
        conn = await asyncpg.connect(table)
        try:
            st = compiled("Region eq 'R7' or Region eq 'R8'", top="3", orderby="Id")
            page = await conn.fetchrow(st.sql, *st.params)
            count = await conn.fetchval("select count(*) from sales where region in ('R7', 'R8')")
            return page, count
        finally:
            await conn.close()

    page, count = run(go())
    assert count == 80
    assert page is not None and '"Id":7' in page[0] and '"Id":8' in page[0]
