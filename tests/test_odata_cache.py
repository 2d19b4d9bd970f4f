"""Versioned response cache: exact answers, invalidated by every committed change."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from odata.cache import Doorkeeper
from sync.config import Job
from sync.engine import run_job
from tests.live import free_port, serve
from tests.test_odata_read import sql

SETUP = """
create table sales (id int primary key, region text, amount numeric(10,2));
insert into sales select i, (array['USA','CA',null])[1 + i % 3], i * 1.5 from generate_series(1, 3000) i;
create view region_totals as
    select coalesce(region, '-') as id, sum(amount) as total, count(*) as n from sales group by 1;
create table untracked (id int primary key, v text);
insert into untracked values (1, 'a');
create table source_rows (id int primary key, region text, amount numeric(10,2));
"""
TOML = """
[odata]
expose = ["public.*"]
"""


@pytest.fixture(scope="module")
def db(databases: Any) -> str:
    return str(databases.create(SETUP))


@pytest.fixture(scope="module")
def server(db: str) -> Iterator[tuple[str, Any]]:
    with serve(db, TOML) as (base, app):
        yield base, app


@pytest.fixture(scope="module")
def client(server: tuple[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0] + "/odata/v4", auth=("sf", "secret"), timeout=30) as c:
        yield c


def hits(app: Any) -> int:
    return int(app.cache.hits)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, f"{what} after {timeout} s"
        time.sleep(0.01)


def cached(client: httpx.Client, app: Any, url: str) -> httpx.Response:
    """Ask `url` until its answer comes from the cache (kept once asked twice under one data
    version, served from memory the third time); that third answer."""
    client.get(url)
    client.get(url)
    before = hits(app)
    r = client.get(url)
    assert hits(app) == before + 1, f"{url} was not answered from the cache"
    return r


def fresh(client: httpx.Client, app: Any, url: str) -> httpx.Response:
    """One GET of `url` that must be answered by PostgreSQL, not from the cache."""
    before = hits(app)
    r = client.get(url)
    assert hits(app) == before, f"{url} was answered from the cache"
    return r


def changed(app: Any, entity_set: str, version: int | None) -> None:
    """Wait for the change's notification (the deadline only says it never came)."""
    wait_until(
        lambda: app.tracker.version(entity_set) not in (version, None),
        10,
        f"the data version of {entity_set} did not change",
    )


def test_repeated_request_is_served_from_the_cache(
    client: httpx.Client, server: tuple[str, Any]
) -> None:
    app = server[1]
    url = "/sales?$select=id,amount&$count=true&$top=26"
    first = client.get(url)
    before = hits(app)
    client.get(url)  # cache_min_uses = 2: kept once asked twice under one version
    third = client.get(url)
    assert hits(app) == before + 1
    assert first.content == third.content and first.headers["etag"] == third.headers["etag"]


def test_metadata_for_4_0_and_4_01_clients_is_never_mixed_up(
    client: httpx.Client, server: tuple[str, Any]
) -> None:
    # The same URL and Accept header, two answers: CSDL JSON for a 4.01 client, CSDL XML for a
    # 4.0 one. Asked in turn, often enough that anything keyed without OData-MaxVersion would
    # hand one client the other's answer.
    accept = {"Accept": "application/json"}
    for _ in range(4):
        for version, kind in (("4.01", "application/json"), ("4.0", "application/xml")):
            r = client.get("/$metadata", headers={**accept, "OData-MaxVersion": version})
            assert r.status_code == 200
            assert r.headers["content-type"].startswith(kind), (version, r.headers)
            assert r.content.startswith(b"{" if kind == "application/json" else b"<?xml")


def test_one_off_requests_are_not_kept(client: httpx.Client, server: tuple[str, Any]) -> None:
    app = server[1]
    entries = len(app.cache)
    for i in range(20):
        assert client.get(f"/sales({1000 + i})").status_code == 200
    assert len(app.cache) == entries  # each asked once: nothing stored
    client.get("/sales(1000)")
    assert len(app.cache) == entries + 1


def test_a_kept_url_is_kept_again_right_after_a_change(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    # A URL kept under the previous version is kept again with the first answer after a
    # change (its stale entry says it is popular), so the next request is a hit.
    app = server[1]
    url = "/sales(11)"
    client.get(url)
    client.get(url)  # asked twice: kept
    version = app.tracker.version("sales")
    sql(db, "update sales set amount = 11.11 where id = 11")
    changed(app, "sales", version)
    assert fresh(client, app, url).json()["amount"] == 11.11  # the first under the new version
    before = hits(app)
    assert client.get(url).json()["amount"] == 11.11
    assert hits(app) == before + 1


def test_a_url_asked_once_per_version_is_not_kept(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    # Asked less often than the data changes, an answer would never be hit: not kept.
    app = server[1]
    url = "/sales(12)"
    entries = len(app.cache)
    client.get(url)
    version = app.tracker.version("sales")
    sql(db, "update sales set amount = 12.12 where id = 12")
    wait_until(lambda: app.tracker.version("sales") != version, 5, "no new version")
    assert client.get(url).json()["amount"] == 12.12  # once under the new version
    assert len(app.cache) == entries
    client.get(url)  # twice under this version: kept
    assert len(app.cache) == entries + 1


def test_doorkeeper_admits_a_key_on_its_nth_use() -> None:
    door = Doorkeeper(3, slots=1 << 10)
    assert [door.admit(("a",)) for _ in range(4)] == [False, False, True, True]
    assert door.admit(("b",)) is False  # counted per key


def test_doorkeeper_forgets_one_offs_and_keeps_popular_keys() -> None:
    door = Doorkeeper(2, slots=1 << 10)
    popular = ("list view",)
    # Twenty times more one-off keys than slots, with a list view asked now and then: ageing
    # keeps the table from filling up, so a key asked once is mostly not admitted (only hash
    # collisions let one in), while the list view stays admitted throughout.
    admitted = 0
    for i in range(20_000):
        admitted += door.admit(("one-off", i))
        if i % 50 == 0:
            assert door.admit(popular) or i == 0
    assert admitted < 20_000 // 2
    fresh = [door.admit(("fresh", i)) for i in range(200)]
    assert fresh.count(True) < 100


def test_min_uses_one_keeps_every_answer(databases: Any) -> None:
    db = databases.create("create table t (id int primary key, v text)")
    sql(db, "insert into t values (1, 'a')")
    toml = '[odata]\nexpose = ["public.*"]\n[server]\ncache_min_uses = 1\n'
    with (
        serve(db, toml) as (base, app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret")) as c,
    ):
        c.get("/t(1)")
        c.get("/t(1)")
        assert app.cache.hits == 1


def test_manual_update_invalidates_a_cached_answer(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    app = server[1]
    url = "/sales(7)"
    assert cached(client, app, url).json()["amount"] != 999.99
    version = app.tracker.version("sales")
    sql(db, "update sales set amount = 999.99 where id = 7")
    changed(app, "sales", version)
    assert fresh(client, app, url).json()["amount"] == 999.99


def test_unchanged_statements_keep_the_version(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    app = server[1]
    url = "/sales?$top=3"
    client.get(url)
    client.get(url)  # kept now (asked twice)
    version = app.tracker.version("sales")
    sql(db, "update sales set amount = amount where false")  # touches no row
    sql(db, "delete from sales where id < 0")
    time.sleep(0.2)
    assert app.tracker.version("sales") == version
    before = hits(app)
    client.get(url)
    assert hits(app) == before + 1


def test_if_none_match_answers_304_until_the_data_changes(client: httpx.Client, db: str) -> None:
    url = "/sales?$select=id&$top=5"
    tag = client.get(url).headers["etag"]
    assert client.get(url, headers={"If-None-Match": tag}).status_code == 304
    sql(db, "update sales set region = 'MX' where id = 1")
    wait_until(
        lambda: client.get(url, headers={"If-None-Match": tag}).status_code != 304,
        2,
        "the ETag did not change after an update",
    )
    assert client.get(url).headers["etag"] != tag


def test_service_writes_invalidate(client: httpx.Client, server: tuple[str, Any]) -> None:
    app = server[1]
    url = "/sales(9)"
    assert cached(client, app, url).json()["region"] != "PATCHED"
    version = app.tracker.version("sales")
    assert client.patch(url, json={"region": "PATCHED"}).status_code == 204
    changed(app, "sales", version)
    assert fresh(client, app, url).json()["region"] == "PATCHED"


def test_views_follow_their_base_tables(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    app = server[1]
    url = "/region_totals('CA')"
    before = cached(client, app, url).json()["n"]
    version = app.tracker.version("region_totals")
    sql(db, "insert into sales values (100001, 'CA', 1)")
    changed(app, "region_totals", version)
    assert fresh(client, app, url).json()["n"] == before + 1


def test_truncate_invalidates(client: httpx.Client, db: str, server: tuple[str, Any]) -> None:
    app = server[1]
    url = "/untracked/$count"
    assert cached(client, app, url).text == "1"
    version = app.tracker.version("untracked")
    sql(db, "truncate untracked")
    changed(app, "untracked", version)
    assert fresh(client, app, url).text == "0"


def test_counts_are_computed_once_per_version(
    client: httpx.Client, server: tuple[str, Any]
) -> None:
    counts = server[1].odata.counts
    first = client.get("/sales?$count=true&$top=1&$filter=region eq 'USA'").json()["@odata.count"]
    before = counts.hits
    second = client.get("/sales?$count=true&$top=2&$filter=region eq 'USA'").json()["@odata.count"]
    assert first == second and counts.hits == before + 1


def test_a_sync_commit_invalidates(client: httpx.Client, db: str, server: tuple[str, Any]) -> None:
    app = server[1]
    sql(db, "insert into source_rows select id, region, amount from sales")
    sql(db, "update source_rows set amount = 4242.42 where id = 11")
    url = "/sales(11)"
    assert cached(client, app, url).json()["amount"] != 4242.42
    version = app.tracker.version("sales")
    job = Job(
        name="sales",
        query="select id, region, amount from source_rows",
        target="public.sales",
        key=["id"],
    )
    asyncio.run(run_job(job, target_url=db, source_url=db))
    changed(app, "sales", version)
    assert fresh(client, app, url).json()["amount"] == 4242.42


def test_lost_listen_connection_serves_uncached_and_recovers(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    app = server[1]
    url = "/sales(13)"
    cached(client, app, url)
    # Keep it deaf until told otherwise: reconnection attempts go to a port nothing listens on.
    real_url, app.tracker.url = app.tracker.url, f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    try:
        sql(db, "select pg_terminate_backend(pid) from pg_stat_activity"
                " where application_name = 'r2sf-listen' and datname = current_database()")  # fmt: skip
        wait_until(lambda: not app.tracker.listening, 10, "the LISTEN connection did not drop")
        # While deaf, every answer comes from PostgreSQL: a change is visible immediately.
        sql(db, "update sales set region = 'DEAF' where id = 13")
        assert fresh(client, app, url).json()["region"] == "DEAF"
        assert fresh(client, app, url).json()["region"] == "DEAF"  # and is not kept
    finally:
        app.tracker.url = real_url
    wait_until(lambda: app.tracker.listening, 30, "the LISTEN connection was not restored")
    cached(client, app, url)
    version = app.tracker.version("sales")
    sql(db, "update sales set region = 'BACK' where id = 13")
    changed(app, "sales", version)
    assert fresh(client, app, url).json()["region"] == "BACK"


def test_without_change_tracking_nothing_is_cached(databases: Any) -> None:
    db = databases.create(
        "create table t (id int primary key, v text); insert into t values (1, 'a');"
    )
    toml = '[odata]\nexpose = ["public.*"]\ntrack_changes = false\n'
    with (
        serve(db, toml) as (base, app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret")) as c,
    ):
        c.get("/t(1)")
        c.get("/t(1)")
        assert app.cache.hits == 0
        sql(db, "update t set v = 'b'")
        assert c.get("/t(1)").json()["v"] == "b"
        triggers = sql(db, "select count(*) from pg_trigger where tgname like 'r2sf%'")[0][0]
        assert triggers == 0


def test_metrics_report_cache_and_versions(server: tuple[str, Any], client: httpx.Client) -> None:
    r = httpx.get(server[0] + "/metrics", auth=("sf", "secret"))
    assert r.status_code == 200
    assert "r2sf_cache_hits_total" in r.text and "r2sf_data_version{" in r.text
    assert httpx.get(server[0] + "/metrics").status_code == 401


def test_tables_the_service_may_not_alter_are_served_uncached(databases: Any) -> None:
    db = databases.create("create table owned_elsewhere (id int primary key, v text)")
    sql(db, "insert into owned_elsewhere values (1, 'a')")
    role = "r2sf_reader_" + db.rsplit("/", 1)[1].split("?")[0][-8:]
    sql(db, f"drop role if exists {role}")
    sql(db, f"create role {role} login")
    try:
        sql(db, f"grant usage, create on schema public to {role}")
        sql(db, f"grant select, insert, update on owned_elsewhere to {role}")
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(db)
        netloc = f"{role}@{parts.hostname}:{parts.port}" if parts.hostname else f"{role}@"
        reader_url = urlunsplit(parts._replace(netloc=netloc))
        toml = '[odata]\nexpose = ["public.*"]\n'
        with (
            serve(reader_url, toml) as (base, app),
            httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret")) as c,
        ):
            assert c.get("/owned_elsewhere(1)").json()["v"] == "a"
            assert app.tracker.version("owned_elsewhere") is None  # no trigger: no version
            c.get("/owned_elsewhere(1)")
            assert app.cache.hits == 0
            sql(db, "update owned_elsewhere set v = 'b'")
            assert c.get("/owned_elsewhere(1)").json()["v"] == "b"  # exact, immediately
    finally:
        sql(db, f"drop owned by {role}")
        sql(db, f"drop role {role}")


def test_concurrent_identical_misses_run_one_query(
    client: httpx.Client, db: str, server: tuple[str, Any]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app = server[1]
    url = "/sales?$count=true&$top=5&$filter=amount gt 10"
    client.get(url)
    version = app.tracker.version("sales")
    sql(db, "update sales set amount = amount + 1 where id = 2")
    changed(app, "sales", version)  # the count below is computed under the new version
    before = app.odata.counts.misses
    joined = app.coalesced

    def fetch(_: int) -> Any:
        with httpx.Client(base_url=server[0] + "/odata/v4", auth=("sf", "secret")) as c:
            return c.get(url).json()["@odata.count"]

    with sales_locked(db), ThreadPoolExecutor(12) as pool:
        counts = list(pool.map(fetch, range(12)))
    assert len(set(counts)) == 1
    # Without coalescing each of the 12 would have computed the count itself.
    assert app.odata.counts.misses - before == 1
    # The waiters are counted (r2sf_cache_coalesced_total): at least those that arrived while
    # the table lock held the first one back.
    assert app.coalesced - joined >= 1
    metrics = httpx.get(server[0] + "/metrics", auth=("sf", "secret")).text
    assert "r2sf_cache_coalesced_total{worker=" in metrics


def test_a_request_without_credentials_never_joins_a_running_one(
    db: str, server: tuple[str, Any]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = server[0] + "/odata/v4/sales?$top=7&$filter=amount gt 11"
    with sales_locked(db), ThreadPoolExecutor(2) as pool:
        authorised = pool.submit(httpx.get, url, auth=("sf", "secret"))
        time.sleep(0.2)  # the authorised request is now running, waiting on the lock
        anonymous = pool.submit(httpx.get, url)
        assert anonymous.result().status_code == 401
        assert authorised.result().status_code == 200


@contextlib.contextmanager
def sales_locked(db: str, seconds: float = 1.0) -> Iterator[None]:
    """Block readers of `sales` for a moment, so that requests started inside surely overlap."""

    async def hold() -> None:
        conn = await asyncpg.connect(db)
        try:
            async with conn.transaction():
                await conn.execute("lock table sales in access exclusive mode")
                await asyncio.sleep(seconds)
        finally:
            await conn.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    time.sleep(0.3)
    try:
        yield
    finally:
        holder.join()
