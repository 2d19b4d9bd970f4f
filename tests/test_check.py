"""`r2sf check` run as an operator runs it: a subprocess against real databases."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from odata.model import Property
from service.check import explain_connect_error, salesforce_field_type
from tests.live import free_port

R2SF = str(Path(sys.executable).parent / "r2sf")

SCHEMA = """
create table public.customer (
    id bigint primary key,
    name text,
    code varchar(20),
    notes varchar(1000),
    balance numeric(30,4),
    price numeric(10,2),
    active boolean,
    "a column whose name is far longer than forty characters" int
);
insert into public.customer (id, name) values (9007199254740993, 'big'), (1, 'small');
create table public.account (id int primary key, label varchar(80));
create view public.customer_names as select name, code from public.customer;
create table public.audit_log (at timestamptz, what text);
"""


def r2sf_check(tmp_path: Path, database_url: str, toml: str = "", **env: str) -> tuple[int, str]:
    config = tmp_path / "r2sf.toml"
    config.write_text(toml or '[odata]\nexpose = ["public.*"]\n')
    full_env = {k: v for k, v in os.environ.items() if k not in ("REDSHIFT_URL", "R2SF_CONFIG")}
    full_env.update(
        DATABASE_URL=database_url, ODATA_CREDENTIALS="sf:secret", R2SF_CONFIG=str(config), **env
    )
    done = subprocess.run(
        [R2SF, "check"], env=full_env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    return done.returncode, done.stdout + done.stderr


def property_line(output: str, entity_set: str, name: str) -> str:
    block = re.split(r"\n(?=  \S)|\n\n", output.split(f"\n  {entity_set} <- ", 1)[1])[0]
    found = [line for line in block.splitlines() if re.match(rf"\s+{re.escape(name)}\s", line)]
    assert len(found) == 1, output
    return found[0]


@pytest.fixture(scope="module")
def warehouse_url(databases: object) -> str:
    return databases.create(SCHEMA)  # type: ignore[attr-defined, no-any-return]


def test_check_lists_sets_keys_edm_and_salesforce_types(tmp_path: Path, warehouse_url: str) -> None:
    code, out = r2sf_check(tmp_path, warehouse_url)
    assert code == 0, out
    assert re.search(r"target .*: ok \(PostgreSQL", out), out
    assert re.search(r"customer <- public\.customer\n\s+key: id", out), out
    assert "account <- public.account" in out
    expected = {
        "id": ("Edm.Int64", "Number(18,0)"),
        "name": ("Edm.String", "Text(128)"),
        "code": ("Edm.String(MaxLength=20)", "Text(20)"),
        "notes": ("Edm.String(MaxLength=1000)", "Long Text Area(1000)"),
        "price": ("Edm.Decimal(Precision=10,Scale=2)", "Number(10,2)"),
        "active": ("Edm.Boolean", "Checkbox"),
    }
    for name, (edm, sf) in expected.items():
        line = property_line(out, "customer", name)
        assert edm in line and line.rstrip().endswith(sf), line


def test_check_warns_about_what_will_hurt_in_salesforce(tmp_path: Path, warehouse_url: str) -> None:
    code, out = r2sf_check(tmp_path, warehouse_url)
    warnings = out.split("warnings (", 1)[1]
    assert code == 0, out  # warnings alone do not fail the check
    assert re.search(r"customer\.name: String without MaxLength becomes Text\(128\)", warnings)
    assert "renamed to a_column_whose_name" in warnings and "longer than 40" in warnings
    assert re.search(r"customer_names \(view\) is not exposed: it has no key", warnings)
    assert re.search(r"audit_log \(table\) is not exposed: it has no key", warnings)
    assert re.search(r"customer\.balance: numeric\(30,4\) is declared as Precision 18", warnings)
    assert "price" not in warnings  # numeric(10,2) fits
    assert re.search(r"customer\.id: key value 9007199254740993 is beyond 2\^53", warnings)


def test_check_says_which_sets_are_change_tracked(tmp_path: Path, warehouse_url: str) -> None:
    toml = (
        '[odata]\nexpose = ["public.*"]\n\n[[odata.sets]]\ntable = "public.account"\n'
        "change_tracking = true\n"
    )
    code, out = r2sf_check(tmp_path, warehouse_url, toml)
    assert code == 0, out
    assert re.search(r"account <- public\.account \(change tracking on", out), out
    assert not re.search(r"customer <- public\.customer \(change tracking", out), out


def test_check_warns_over_200_entity_sets(tmp_path: Path, databases: object) -> None:
    tables = "".join(f"create table t{i} (id int primary key);" for i in range(201))
    url = databases.create(tables)  # type: ignore[attr-defined]
    code, out = r2sf_check(tmp_path, url)
    assert code == 0, out
    assert "201 entity sets: a Salesforce org holds at most 200 external objects" in out


def test_check_says_the_target_port_refused_and_exits_non_zero(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    code, out = r2sf_check(tmp_path, url)
    assert code != 0
    line = next(x for x in out.splitlines() if x.startswith("target"))
    assert "FAILED refused" in line, out


def test_check_says_the_source_host_does_not_resolve(tmp_path: Path, warehouse_url: str) -> None:
    toml = (
        '[source]\nurl = "postgresql://u:pw@r2sf-no-such-host.invalid:5439/dev"\n'
        '[[sync.jobs]]\nname = "a"\ntable = "public.a"\ntarget = "public.a"\nkey = ["id"]\n'
    )
    code, out = r2sf_check(tmp_path, warehouse_url, toml)
    assert code != 0
    line = next(x for x in out.splitlines() if x.startswith("source"))
    assert "FAILED DNS" in line, out
    assert "pw" not in line  # the password is redacted
    assert re.search(r"target .*: ok", out)  # the other connection is still checked


def test_check_reports_ssl_refusal_of_a_server_without_ssl(
    tmp_path: Path, warehouse_url: str
) -> None:
    if "host=/" in warehouse_url:
        pytest.skip("the embedded test server listens on a unix socket only: no SSL to refuse")
    url = warehouse_url + ("&" if "?" in warehouse_url else "?") + "sslmode=require"
    code, out = r2sf_check(tmp_path, url)
    line = next(x for x in out.splitlines() if x.startswith("target"))
    if ": ok" in line:
        pytest.skip("the test server accepts SSL")
    assert code != 0
    assert "FAILED SSL" in line, out


def test_check_reports_a_redshift_source_refusing_connections(
    tmp_path: Path, warehouse_url: str
) -> None:
    toml = (
        f'[source]\nurl = "redshift://u:pw@127.0.0.1:{free_port()}/dev?sslmode=disable"\n'
        '[[sync.jobs]]\nname = "a"\ntable = "public.a"\ntarget = "public.a"\nkey = ["id"]\n'
    )
    code, out = r2sf_check(tmp_path, warehouse_url, toml)
    assert code != 0
    line = next(x for x in out.splitlines() if x.startswith("source"))
    assert "FAILED refused" in line, out


def test_check_reports_a_config_error_with_the_key_and_exit_code_2(
    tmp_path: Path, warehouse_url: str
) -> None:
    code, out = r2sf_check(tmp_path, warehouse_url, "[odata]\npage_size = 5000\n")
    assert code == 2
    assert "odata.page_size" in out


def test_password_failures_are_classified_as_auth() -> None:
    # The test servers trust every local user, so a real wrong password cannot be provoked.
    exc = asyncpg.InvalidPasswordError('password authentication failed for user "sf"')
    assert explain_connect_error(exc).startswith("auth:")


@pytest.mark.parametrize(
    ("edm", "max_length", "precision", "scale", "expected"),
    [
        ("Edm.String", None, None, None, "Text(128)"),
        ("Edm.String", 255, None, None, "Text(255)"),
        ("Edm.String", 256, None, None, "Long Text Area(256)"),
        ("Edm.Decimal", None, 18, 2, "Number(18,2)"),
        ("Edm.Date", None, None, None, "Date/Time (at midnight)"),
        ("Edm.DateTimeOffset", None, None, None, "Date/Time"),
        ("Edm.Guid", None, None, None, "Text(36)"),
        ("Edm.TimeOfDay", None, None, None, "Text"),
        ("Edm.Double", None, None, None, "Number"),
    ],
)
def test_salesforce_field_type_follows_the_spec_table(
    edm: str, max_length: int | None, precision: int | None, scale: int | None, expected: str
) -> None:
    p = Property("P", "p", edm, max_length=max_length, precision=precision, scale=scale)
    assert salesforce_field_type(p) == expected


# 120,000 rows (INDEX_WARNING_ROWS is 100,000), analysed so that pg_class.reltuples knows.
BIG_SCHEMA = """
create table public.orders (
    id bigint primary key,
    "Region" varchar(20),
    amount numeric(12,2),
    qty int not null default 1,
    placed date,
    customer varchar(80) not null default 'c',
    seller varchar(40),
    scored int,
    note varchar(1000),
    paid boolean,
    status varchar(10),
    code varchar(10),
    city varchar(40),
    zip varchar(10),
    "Shipped At" timestamptz,
    c1 int, c2 int, c3 int, c4 int, c5 int, c6 int, c7 int, c8 int
);
-- Nullable columns need ASC NULLS FIRST or DESC NULLS LAST to serve OData's sort order.
create index on public.orders (placed nulls first, "Region");  -- placed leads, "Region" not
create index on public.orders (customer);                 -- not null: any order serves
create index on public.orders (seller);                   -- nulls last: filters only
create index on public.orders (scored desc nulls last);   -- OData's descending order
create index on public.orders (status) where status is not null;  -- partial: not for all
create index on public.orders using hash (code);          -- hash: no sorting, no ranges
create index on public.orders (lower(city));              -- an expression, not the column
create index on public.orders (paid) include (zip);       -- included, not a key column
insert into public.orders (id, placed) select g, date '2024-01-01' + g % 365
from generate_series(1, 120000) g;
analyze public.orders;

create materialized view public.order_regions as select id, "Region" from public.orders;
analyze public.order_regions;

create table public.events (id int, at date, kind varchar(10), primary key (id, at))
    partition by range (at);
create table public.events_2023 partition of public.events
    for values from ('2023-01-01') to ('2024-01-01');
create table public.events_2024 partition of public.events
    for values from ('2024-01-01') to ('2025-01-01');
insert into public.events select g, date '2023-01-01' + g % 700, 'k' from generate_series(1, 110000) g;
analyze public.events;

create table public.small (id int primary key, label varchar(20));
insert into public.small select g, 'x' from generate_series(1, 1000) g;
analyze public.small;
"""
BIG_TOML = """
[odata]
expose = ["public.*"]
[[odata.sets]]
table = "public.order_regions"
key = ["id"]
"""


def index_warning(out: str, entity_set: str) -> str:
    found = [w for w in out.splitlines() if w.startswith(f"  - {entity_set} (public.")]
    assert len(found) <= 1, out
    return found[0] if found else ""


def suggested(out: str) -> list[str]:
    if "\nsuggested indexes" not in out:
        return []
    block = out.split("\nsuggested indexes", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()[1:]]


def test_check_suggests_indexes_for_unindexed_list_view_columns_of_large_sets(
    tmp_path: Path, databases: object
) -> None:
    url = databases.create(BIG_SCHEMA)  # type: ignore[attr-defined]
    code, out = r2sf_check(tmp_path, url, BIG_TOML)
    assert code == 0, out

    orders = index_warning(out, "orders")
    assert "about 120,000 rows" in orders, out
    # In column order: the unindexed text, number and date columns, ten by name.
    expected = ["Region", "amount", "qty", "seller", "status", "code", "city", "zip",
                "Shipped_At", "c1"]  # fmt: skip
    assert f"on {', '.join(expected)} and 7 more (the indexes on seller serve filters" in orders
    for supported_or_not_sortable in ("id", "placed", "customer", "scored", "note", "paid"):
        assert not re.search(rf"\b{supported_or_not_sortable}\b", orders), orders
    statements = suggested(out)
    orders_statements = [s for s in statements if '"public"."orders"' in s]
    assert len(orders_statements) == 17  # one per property, all of them
    assert 'CREATE INDEX CONCURRENTLY ON "public"."orders" ("Region" NULLS FIRST);' in statements
    assert 'CREATE INDEX CONCURRENTLY ON "public"."orders" ("qty");' in statements  # not null
    assert (
        'CREATE INDEX CONCURRENTLY ON "public"."orders" ("Shipped At" NULLS FIRST);' in statements
    )

    # A materialized view exposed with a configured key has no index at all.
    regions = index_warning(out, "order_regions")
    assert "sort or filter on the key (id), Region;" in regions, out
    assert 'CREATE UNIQUE INDEX CONCURRENTLY ON "public"."order_regions" ("id");' in statements

    # A partitioned table: rows counted over its partitions; no CONCURRENTLY (refused there).
    events = index_warning(out, "events")
    assert "about 110,000 rows" in events and "sort or filter on kind;" in events, out
    assert 'CREATE INDEX ON "public"."events" ("kind" NULLS FIRST);' in statements

    assert index_warning(out, "small") == ""  # 1,000 rows: no warning whatever its indexes

    # The statements are valid SQL and are what the warning asks for: once run, none is left.
    for statement in statements:
        if not statement.startswith("--"):
            x_sql(url, statement)
    code, out = r2sf_check(tmp_path, url, BIG_TOML)
    assert code == 0, out
    assert suggested(out) == [] and "no index for list views" not in out, out


def x_sql(url: str, statement: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(go())
