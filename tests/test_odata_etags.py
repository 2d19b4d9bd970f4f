"""Entity ETags and optimistic concurrency over real HTTP: If-Match / If-None-Match on writes
are evaluated atomically with the write; an entity's ETag changes only when that entity does."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import httpx
import pytest

from odata import etags
from tests.live import serve
from tests.test_odata_cache import wait_until
from tests.test_odata_read import sql

SETUP = """
create table item (id int primary key, name text not null, qty int, price numeric(8,2));
insert into item select i, 'item ' || i, i, i * 1.5 from generate_series(1, 40) as i;
create table letters (id int primary key, t text, qty int);
insert into letters values (1, 'same', 1);
"""
TOML = """
[odata]
expose = ["public.*"]
[server]
cache_mb = 0
"""
CACHED = '[odata]\nexpose = ["public.*"]\n[server]\ncache_mb = 16\ncache_min_uses = 1\n'
AUTH = ("sf", "secret")


def tag_of(client: httpx.Client, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["@odata.etag"] == r.headers["ETag"]
    return r.headers["ETag"]


def qty(db: str, key: int) -> Any:
    return sql(db, "select qty from item where id = $1", key)[0][0]


# --- the ETag ------------------------------------------------------------------------------------


def test_entity_etag_is_weak_and_stays_put_while_other_entities_change(
    client: httpx.Client,
) -> None:
    before = tag_of(client, "/item(1)")
    assert before.startswith('W/"') and before.endswith('"')
    assert client.patch("/item(2)", json={"qty": 200}).status_code == 204
    assert client.post("/item", json={"id": 100, "name": "new"}).status_code == 201
    assert tag_of(client, "/item(1)") == before
    assert client.patch("/item(1)", json={"qty": 100}).status_code == 204
    assert tag_of(client, "/item(1)") != before


def test_etag_covers_the_whole_row_even_with_a_column_named_like_the_table_alias(
    client: httpx.Client,
) -> None:
    before = tag_of(client, "/letters(1)")
    assert client.patch("/letters(1)", json={"qty": 2}).status_code == 204
    assert tag_of(client, "/letters(1)") != before


def test_etag_is_the_same_for_every_representation_of_one_state(client: httpx.Client) -> None:
    plain = tag_of(client, "/item(3)")
    selected = client.get("/item(3)?$select=name")
    full = client.get("/item(3)", headers={"Accept": "application/json;odata.metadata=full"})
    assert selected.headers["ETag"] == full.headers["ETag"] == plain
    none = client.get("/item(3)", headers={"Accept": "application/json;odata.metadata=none"})
    assert none.headers["ETag"] == plain and "@odata.etag" not in none.json()


def test_an_update_that_restores_the_old_values_restores_the_old_etag(
    client: httpx.Client,
) -> None:
    # The ETag is a function of the row's contents, not a counter of writes.
    before = tag_of(client, "/item(4)")
    client.patch("/item(4)", json={"qty": 999})
    assert tag_of(client, "/item(4)") != before
    client.patch("/item(4)", json={"qty": 4})
    assert tag_of(client, "/item(4)") == before


def test_writes_answer_the_new_etag(client: httpx.Client) -> None:
    created = client.post("/item", json={"id": 101, "name": "fresh", "qty": 1})
    assert created.status_code == 201
    assert created.headers["ETag"] == created.json()["@odata.etag"] == tag_of(client, "/item(101)")
    patched = client.patch("/item(101)", json={"qty": 2})
    assert patched.status_code == 204
    assert patched.headers["ETag"] == tag_of(client, "/item(101)")
    replaced = client.put("/item(101)", json={"name": "replaced"})
    assert replaced.headers["ETag"] == tag_of(client, "/item(101)")


# --- If-Match --------------------------------------------------------------------------------------


def test_if_match_with_the_current_etag_applies_the_update(client: httpx.Client, db: str) -> None:
    tag = tag_of(client, "/item(5)")
    r = client.patch("/item(5)", json={"qty": 55}, headers={"If-Match": tag})
    assert r.status_code == 204, r.text
    assert qty(db, 5) == 55


@pytest.mark.parametrize("method", ["PATCH", "PUT", "DELETE"])
def test_stale_if_match_is_412_and_changes_nothing(
    client: httpx.Client, db: str, method: str
) -> None:
    stale = tag_of(client, "/item(6)")
    client.patch("/item(6)", json={"qty": qty(db, 6) + 1})  # someone else's change
    current = sql(db, "select * from item where id = 6")[0]
    body = None if method == "DELETE" else {"name": "mine", "qty": 61}
    r = client.request(method, "/item(6)", json=body, headers={"If-Match": stale})
    assert r.status_code == 412, r.text
    error = r.json()["error"]
    assert error["code"] == "PreconditionFailed" and "item(6)" in error["message"]
    assert sql(db, "select * from item where id = 6")[0] == current


def test_delete_with_the_current_etag_deletes(client: httpx.Client, db: str) -> None:
    tag = tag_of(client, "/item(7)")
    assert client.delete("/item(7)", headers={"If-Match": tag}).status_code == 204
    assert sql(db, "select count(*) from item where id = 7")[0][0] == 0


def test_if_match_star_matches_any_existing_entity(client: httpx.Client, db: str) -> None:
    r = client.patch("/item(8)", json={"qty": 80}, headers={"If-Match": "*"})
    assert r.status_code == 204 and qty(db, 8) == 80
    assert client.patch("/item(999)", json={"qty": 1}, headers={"If-Match": "*"}).status_code == 404


def test_if_match_on_a_missing_entity_is_404_not_412(client: httpx.Client) -> None:
    tag = tag_of(client, "/item(9)")
    r = client.patch("/item(998)", json={"qty": 1}, headers={"If-Match": tag})
    assert r.status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        "{tag}",
        "{strong}",  # the same opaque tag without W/: weak comparison ignores the prefix
        'W/"0000", {tag}',
        '"0000" , {strong}',
    ],
)
def test_if_match_compares_weakly_against_a_list(
    client: httpx.Client, db: str, header: str
) -> None:
    tag = tag_of(client, "/item(10)")
    value = header.format(tag=tag, strong=tag.removeprefix("W/"))
    new = qty(db, 10) + 1
    r = client.patch("/item(10)", json={"qty": new}, headers={"If-Match": value})
    assert r.status_code == 204, (value, r.text)
    assert qty(db, 10) == new


def test_if_match_with_an_empty_body_update_still_checks(client: httpx.Client) -> None:
    tag = tag_of(client, "/item(11)")
    assert client.patch("/item(11)", json={}, headers={"If-Match": tag}).status_code == 204
    assert client.patch("/item(11)", json={}, headers={"If-Match": 'W/"0"'}).status_code == 412


def test_if_none_match_on_writes(client: httpx.Client, db: str) -> None:
    tag = tag_of(client, "/item(12)")
    # `*`: only if the entity does not exist, and it does.
    assert (
        client.patch("/item(12)", json={"qty": 1}, headers={"If-None-Match": "*"}).status_code
        == 412
    )
    assert (
        client.patch("/item(12)", json={"qty": 1}, headers={"If-None-Match": tag}).status_code
        == 412
    )
    assert qty(db, 12) == 12
    r = client.patch("/item(12)", json={"qty": 120}, headers={"If-None-Match": 'W/"0"'})
    assert r.status_code == 204 and qty(db, 12) == 120


def test_writes_without_preconditions_are_unchanged(client: httpx.Client, db: str) -> None:
    # Salesforce never sends If-Match (spec §6): nothing may start requiring it.
    assert client.patch("/item(13)", json={"qty": 130}).status_code == 204
    assert client.delete("/item(13)").status_code == 204
    assert client.delete("/item(13)").status_code == 404


def test_the_precondition_is_checked_on_the_row_the_write_locks(
    client: httpx.Client, db: str
) -> None:
    """A change committed while the write waits for the row lock fails the write: a check read
    before the lock would pass on the old row and overwrite the change."""
    tag = tag_of(client, "/item(14)")
    outcome: list[httpx.Response] = []

    async def race() -> None:
        conn = await asyncpg.connect(db)
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("update item set qty = 1400 where id = 14")
            thread = threading.Thread(
                target=lambda: outcome.append(
                    client.patch("/item(14)", json={"name": "late"}, headers={"If-Match": tag})
                )
            )
            thread.start()
            waiting = (
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and application_name = 'r2sf-odata' and wait_event_type = 'Lock'"
            )
            observer = await asyncpg.connect(db)
            try:
                deadline = asyncio.get_running_loop().time() + 10
                while await observer.fetchval(waiting) == 0:
                    assert asyncio.get_running_loop().time() < deadline, "the PATCH never waited"
                    await asyncio.sleep(0.01)
            finally:
                await observer.close()
            await tx.commit()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        finally:
            await conn.close()

    asyncio.run(race())
    assert outcome[0].status_code == 412, outcome[0].text
    assert sql(db, "select name, qty from item where id = 14")[0] == ("item 14", 1400)


# --- If-None-Match on reads ------------------------------------------------------------------------


def test_if_none_match_on_an_entity_is_304_without_the_cache(client: httpx.Client) -> None:
    tag = tag_of(client, "/item(15)")
    r = client.get("/item(15)", headers={"If-None-Match": tag})
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == tag
    assert client.get("/item(15)", headers={"If-None-Match": 'W/"0"'}).status_code == 200


def test_cached_entity_keeps_its_etag_across_writes_to_other_entities(databases: Any) -> None:
    db = databases.create(SETUP)
    with (
        serve(db, CACHED) as (base, app),
        httpx.Client(base_url=base + "/odata/v4", auth=AUTH, timeout=30) as c,
    ):
        tag = tag_of(c, "/item(1)")
        assert c.get("/item(1)", headers={"If-None-Match": tag}).status_code == 304
        version = app.tracker.version("item")
        assert c.patch("/item(2)", json={"qty": 22}).status_code == 204
        wait_until(lambda: app.tracker.version("item") != version, 10, "no change notification")
        # A fresh answer under the new data version, with the entity's unchanged ETag.
        assert c.get("/item(1)", headers={"If-None-Match": tag}).status_code == 304
        assert tag_of(c, "/item(1)") == tag
        assert c.patch("/item(1)", json={"qty": 11}).status_code == 204
        wait_until(lambda: tag_of(c, "/item(1)") != tag, 10, "the ETag never changed")
        assert c.get("/item(1)", headers={"If-None-Match": tag}).status_code == 200


# --- header parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("*", "*"),
        (" * ", "*"),
        ('W/"a1"', ("a1",)),
        ('"a1", W/"b2"', ("a1", "b2")),
        ('"with,comma", "x"', ("with,comma", "x")),
        ("bare", ("bare",)),
    ],
)
def test_parse_lists_the_opaque_tags(header: str | None, expected: Any) -> None:
    assert etags.parse(header) == expected


def test_weak_comparison_ignores_the_weak_prefix_on_either_side() -> None:
    assert etags.matches('"a1"', 'W/"a1"')
    assert etags.matches('W/"a1"', '"a1"')
    assert etags.matches("*", 'W/"a1"')
    assert not etags.matches('W/"a2"', 'W/"a1"')
    assert not etags.matches(None, 'W/"a1"')
