"""The Redshift wire shim: the real `redshift_connector` runs queries against the test PostgreSQL.

Works on both test servers (TCP in TEST_DATABASE_URL, or the embedded unix-socket pgserver).
"""

from __future__ import annotations

import datetime
import gc
import socket
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
import redshift_connector

from tests.conftest import Databases, run
from tests.redshift_shim import RedshiftShim, rewrite_startup, upstream_address

SETUP_SQL = """
create table items (id int primary key, label varchar(20) not null, price numeric(12,2));
insert into items
select g, 'item ' || g, (g * 1.25)::numeric(12,2) from generate_series(1, 2500) g;
"""


@pytest.fixture(scope="module")
def db_url(databases: Databases) -> str:
    return databases.create(SETUP_SQL)


@pytest.fixture(scope="module")
def shim(db_url: str) -> Iterator[RedshiftShim]:
    with RedshiftShim(db_url) as s:
        yield s


def connect(shim: RedshiftShim, db_url: str, **kw: Any) -> redshift_connector.Connection:
    database = urlsplit(db_url).path.lstrip("/")
    return redshift_connector.connect(
        host=shim.host,
        port=shim.port,
        user="postgres",
        database=database,
        # trust auth ignores it; the driver accepts None too, but a value mirrors real use.
        password="unused",
        ssl=False,
        **kw,
    )


def test_driver_reads_common_types_through_the_shim(shim: RedshiftShim, db_url: str) -> None:
    conn = connect(shim, db_url)
    try:
        cur = conn.cursor()
        cur.execute(
            "select 42::int, 9000000000::bigint, 12345.67::numeric(12,2), 'héllo'::varchar(10),"
            " date '2008-02-29', timestamp '2008-12-31 23:59:58.123456', true, false, null::int"
        )
        row = cur.fetchone()
    finally:
        conn.close()
    assert row == [
        42,
        9_000_000_000,
        Decimal("12345.67"),
        "héllo",
        datetime.date(2008, 2, 29),
        datetime.datetime(2008, 12, 31, 23, 59, 58, 123456),
        True,
        False,
        None,
    ]


def test_driver_sees_redshift_server_version(shim: RedshiftShim, db_url: str) -> None:
    conn = connect(shim, db_url)
    try:
        statuses = dict(conn.parameter_statuses)
        cur = conn.cursor()
        cur.execute("select current_setting('server_version_num')::int")
        real_version_num = cur.fetchone()[0]
    finally:
        conn.close()
    assert statuses[b"server_version"] == b"8.0.2"
    # The server behind it is still the real PostgreSQL.
    assert real_version_num >= 100000


def test_declare_fetch_forward_loop_returns_every_row_once(shim: RedshiftShim, db_url: str) -> None:
    conn = connect(shim, db_url)
    seen: list[int] = []
    total = Decimal(0)
    batches = 0
    try:
        cur = conn.cursor()
        cur.execute("begin")
        cur.execute("declare c no scroll cursor for select id, label, price from items order by id")
        while True:
            cur.execute("fetch forward 1000 from c")
            rows = cur.fetchall()
            if not rows:
                break
            batches += 1
            assert len(rows) <= 1000
            for ident, label, price in rows:
                assert label == f"item {ident}"
                seen.append(ident)
                total += price
        cur.execute("close c")
        cur.execute("commit")
    finally:
        conn.close()
    expected_ids, expected_total = run(_items_summary(db_url))
    assert seen == expected_ids
    assert total == expected_total
    assert batches == -(-len(expected_ids) // 1000)


async def _items_summary(url: str) -> tuple[list[int], Decimal]:
    conn = await asyncpg.connect(url)
    try:
        ids = [r[0] for r in await conn.fetch("select id from items order by id")]
        total = await conn.fetchval("select sum(price) from items")
    finally:
        await conn.close()
    return ids, total


def test_fetchmany_streams_a_large_result(shim: RedshiftShim, db_url: str) -> None:
    conn = connect(shim, db_url)
    count = 0
    checksum = 0
    try:
        cur = conn.cursor()
        cur.execute("select g, repeat('x', g % 50) from generate_series(1, 60000) g")
        while rows := cur.fetchmany(10000):
            count += len(rows)
            checksum += sum(g + len(s) for g, s in rows)
    finally:
        conn.close()
    assert count == 60000
    assert checksum == sum(g + g % 50 for g in range(1, 60001))


def test_bad_sql_raises_driver_error_and_shim_keeps_serving(
    shim: RedshiftShim, db_url: str
) -> None:
    conn = connect(shim, db_url, timeout=20)
    try:
        cur = conn.cursor()
        with pytest.raises(redshift_connector.ProgrammingError, match="no_such_table"):
            cur.execute("select * from no_such_table")
        conn.rollback()
        cur.execute("select count(*) from items")
        assert cur.fetchone()[0] == 2500
    finally:
        conn.close()
    other = connect(shim, db_url, timeout=20)
    try:
        cur = other.cursor()
        cur.execute("select 1")
        assert cur.fetchone() == [1]
    finally:
        other.close()


# redshift_connector does not close its socket when the server refuses the startup; collect it
# here so the ResourceWarning belongs to this test and is ignored only for it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_unknown_database_fails_at_connect_with_driver_error(shim: RedshiftShim) -> None:
    with pytest.raises(redshift_connector.Error, match="does not exist"):
        redshift_connector.connect(
            host=shim.host,
            port=shim.port,
            user="postgres",
            database="r2sf_no_such_database",
            password="unused",
            ssl=False,
            timeout=20,
        )
    gc.collect()


def test_application_name_passes_through(shim: RedshiftShim, db_url: str) -> None:
    conn = connect(shim, db_url, application_name="r2sf-shim-test")
    try:
        cur = conn.cursor()
        cur.execute("select current_setting('application_name')")
        assert cur.fetchone() == ["r2sf-shim-test"]
    finally:
        conn.close()


def test_concurrent_connections_are_independent(shim: RedshiftShim, db_url: str) -> None:
    results: dict[int, Any] = {}

    def worker(n: int) -> None:
        try:
            conn = connect(shim, db_url, timeout=30)
            try:
                cur = conn.cursor()
                cur.execute(f"select sum(id) from items where id % 4 = {n}")
                results[n] = cur.fetchone()[0]
            finally:
                conn.close()
        except Exception as e:
            results[n] = e

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {n: sum(i for i in range(1, 2501) if i % 4 == n) for n in range(4)}


def test_ssl_request_is_refused_with_n() -> None:
    with (
        RedshiftShim("postgresql://postgres@127.0.0.1:1/x") as s,
        socket.create_connection((s.host, s.port), timeout=5) as sock,
    ):
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"N"


def test_closed_shim_refuses_connections(db_url: str) -> None:
    with RedshiftShim(db_url) as s:
        port = s.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_startup_rewrite_keeps_postgres_parameters_and_drops_redshift_ones() -> None:
    params = [
        (b"user", b"alice"),
        (b"database", b"dw"),
        (b"application_name", b"app"),
        (b"client_protocol_version", b"2"),
        (b"driver_version", b"Redshift Python Driver 2.2.0"),
        (b"os_version", b"Linux"),
        (b"driver_discovery_version", b"1"),
        (b"plugin_name", b"x"),
    ]
    body = struct.pack("!i", 196608) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    out = rewrite_startup(body)
    (length,) = struct.unpack("!i", out[:4])
    assert length == len(out)
    fields = out[8:-1].split(b"\0")[:-1]
    assert dict(zip(fields[0::2], fields[1::2], strict=True)) == {
        b"user": b"alice",
        b"database": b"dw",
        b"application_name": b"app",
        b"work_mem": b"64MB",  # UPSTREAM_SETTINGS: a Redshift query's memory
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", (socket.AF_INET, ("127.0.0.1", 5432))),
        ("postgresql://u:p@db.example:6543/x", (socket.AF_INET, ("db.example", 6543))),
        (
            "postgresql://postgres:@/postgres?host=/tmp/abc",
            (socket.AF_UNIX, "/tmp/abc/.s.PGSQL.5432"),
        ),
        ("postgresql:///d?host=/tmp/abc&port=5499", (socket.AF_UNIX, "/tmp/abc/.s.PGSQL.5499")),
    ],
)
def test_upstream_address_understands_tcp_and_unix_socket_urls(
    url: str, expected: tuple[int, Any]
) -> None:
    assert upstream_address(url) == expected


def test_url_names_the_shim_with_ssl_disabled(shim: RedshiftShim) -> None:
    parts = urlsplit(shim.url(user="bob", database="dw", password="pw"))
    assert (parts.scheme, parts.username, parts.password) == ("redshift", "bob", "pw")
    assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", shim.port, "/dw")
    assert parse_qs(parts.query) == {"sslmode": ["disable"]}
