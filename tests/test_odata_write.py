"""Writable external objects: create, update, replace, delete, checked in PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import asyncpg
import httpx
import pytest

from tests import deadlocks
from tests.live import serve
from tests.test_odata_read import sql

SETUP = """
create table category (
    "CategoryID" serial primary key,
    "Name" varchar(20) not null,
    "Description" text,
    "Budget" numeric(8,2),
    "Active" boolean not null default true,
    "Since" timestamp,
    "Logo" bytea
);
insert into category ("Name") values ('Beverages'), ('Dairy');
create table line ("OrderID" int, "LineNo" int, qty int not null, primary key ("OrderID", "LineNo"));
create view category_names as select "CategoryID" as id, "Name" from category;
"""
TOML = """
[odata]
expose = ["public.*"]
[[odata.sets]]
table = "public.category"
name = "Category"
"""


def row(db: str, key: int) -> Any:
    found = sql(db, 'select * from category where "CategoryID" = $1', key)
    return found[0] if found else None


def test_post_creates_and_returns_the_entity_with_location(client: httpx.Client, db: str) -> None:
    r = client.post(
        "/Category", json={"Name": "Produce", "Budget": 12.5, "Since": "2024-05-01T12:00:00+02:00"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    stored = row(db, body["CategoryID"])
    assert stored["Name"] == "Produce" and str(stored["Budget"]) == "12.50"
    assert stored["Since"].isoformat() == "2024-05-01T10:00:00"  # converted to UTC
    assert body["Active"] is True  # column default came back
    assert r.headers["Location"].endswith(f"/odata/v4/Category({body['CategoryID']})")
    assert r.headers["OData-EntityId"] == r.headers["Location"]


def test_post_prefer_return_minimal_is_204(client: httpx.Client, db: str) -> None:
    r = client.post("/Category", json={"Name": "Minimal"}, headers={"Prefer": "return=minimal"})
    assert r.status_code == 204 and r.content == b""
    assert sql(db, """select count(*) from category where "Name" = 'Minimal'""")[0][0] == 1


def test_patch_updates_only_given_properties(client: httpx.Client, db: str) -> None:
    before = row(db, 1)
    r = client.patch("/Category(1)", json={"Description": "Soft drinks"})
    assert r.status_code == 204, r.text
    after = row(db, 1)
    assert after["Description"] == "Soft drinks" and after["Name"] == before["Name"]


def test_put_replaces_and_resets_missing_properties(client: httpx.Client, db: str) -> None:
    client.patch("/Category(2)", json={"Description": "x", "Budget": 5})
    r = client.put("/Category(2)", json={"Name": "Dairy 2"})
    assert r.status_code == 204, r.text
    after = row(db, 2)
    assert (after["Name"], after["Description"], after["Budget"], after["Active"]) == (
        "Dairy 2",
        None,
        None,
        True,
    )


@pytest.mark.parametrize("how", ["MERGE", "X-HTTP-Method"])
def test_merge_and_tunnelled_patch(client: httpx.Client, db: str, how: str) -> None:
    body = json.dumps({"Description": f"via {how}"})
    headers = {"Content-Type": "application/json"}
    if how == "MERGE":
        r = client.request("MERGE", "/Category(1)", content=body, headers=headers)
    else:
        r = client.post("/Category(1)", content=body, headers={**headers, "X-HTTP-Method": "MERGE"})
    assert r.status_code == 204, r.text
    assert row(db, 1)["Description"] == f"via {how}"


def test_gzip_compressed_request_body(client: httpx.Client, db: str) -> None:
    raw = gzip.compress(json.dumps({"Description": "compressed"}).encode())
    r = client.patch(
        "/Category(1)",
        content=raw,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 204, r.text
    assert row(db, 1)["Description"] == "compressed"


def test_delete_then_404(client: httpx.Client, db: str) -> None:
    created = client.post("/Category", json={"Name": "Temp"}).json()["CategoryID"]
    assert client.delete(f"/Category({created})").status_code == 204
    assert row(db, created) is None
    assert client.delete(f"/Category({created})").status_code == 404
    assert client.patch(f"/Category({created})", json={"Name": "x"}).status_code == 404


def test_composite_key_write(client: httpx.Client, db: str) -> None:
    assert client.post("/line", json={"OrderID": 1, "LineNo": 2, "qty": 3}).status_code == 201
    assert client.patch("/line(OrderID=1,LineNo=2)", json={"qty": 4}).status_code == 204
    assert sql(db, 'select qty from line where "OrderID" = 1 and "LineNo" = 2')[0][0] == 4


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"Nmae": "x"}, 400, "InvalidBody", "'Nmae' is not a property of Category"),
        ({"Name": 5}, 400, "InvalidBody", "Name: must be Edm.String; got number 5"),
        ({"Name": None}, 400, "InvalidBody", "Name: cannot be null"),
        ({"Name": "x" * 21}, 400, "InvalidBody", "Name: at most 20 characters (got 21)"),
        (
            {"Name": "x", "Budget": 1234567.891},  # numeric(8,2)
            400,
            "InvalidBody",
            "Budget: at most 6 digits before the decimal point (Precision 8, Scale 2)",
        ),
        (
            {"Name": "x", "Since": "not a date"},
            400,
            "InvalidBody",
            "Since: must be a date and time",
        ),
        (
            {"Name": "x", "CategoryID": 1},
            409,
            "Conflict",
            "CategoryID: another Category already has this key",
        ),
    ],
)
def test_bad_writes_are_4xx_and_change_nothing(
    client: httpx.Client, db: str, body: Any, status: int, code: str, message: str
) -> None:
    before = sql(db, "select count(*) from category")[0][0]
    r = client.post("/Category", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"].startswith(message)
    assert sql(db, "select count(*) from category")[0][0] == before


def test_unknown_property_suggests_the_closest(client: httpx.Client) -> None:
    r = client.post("/Category", json={"Nmae": "x"})
    assert "did you mean 'Name'" in r.json()["error"]["message"]


def test_key_cannot_change(client: httpx.Client) -> None:
    r = client.patch("/Category(1)", json={"CategoryID": 99})
    assert r.status_code == 400


def test_views_are_read_only(client: httpx.Client) -> None:
    r = client.post("/category_names", json={"id": 5, "Name": "x"})
    assert r.status_code == 405 and "GET" in r.headers["Allow"]


def test_not_json_is_400_and_wrong_media_type_is_415(client: httpx.Client) -> None:
    assert (
        client.post(
            "/Category", content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    r = client.post("/Category", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert r.status_code == 415


def test_write_methods_on_collection_and_metadata_are_405(client: httpx.Client) -> None:
    assert client.delete("/Category").status_code == 405
    assert client.post("/$metadata", json={}).status_code == 405


def test_csrf_token_is_fetched_with_a_get_and_required_on_writes(databases: Any) -> None:
    db = databases.create(SETUP)
    toml = TOML.replace("[odata]\n", "[odata]\ncsrf = true\n")
    with (
        serve(db, toml) as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret")) as c,
    ):
        assert c.post("/Category", json={"Name": "x"}).status_code == 403
        token = c.get("/Category?$top=1", headers={"X-CSRF-Token": "Fetch"}).headers["X-CSRF-Token"]
        again = c.get("/Category?$top=1", headers={"X-CSRF-Token": "Fetch"}).headers["X-CSRF-Token"]
        assert token == again  # also when the answer came from the cache
        r = c.post("/Category", json={"Name": "x"}, headers={"X-CSRF-Token": token})
        assert r.status_code == 201
        assert c.delete("/Category(1)", headers={"X-CSRF-Token": token + "0"}).status_code == 403


def test_location_of_an_int64_key_is_unquoted_under_ieee754(databases: Any) -> None:
    db = databases.create("create table big (id bigint primary key, v text);")
    with (
        serve(db, '[odata]\nexpose = ["public.*"]\n') as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret")) as c,
    ):
        r = c.post(
            "/big",
            json={"id": "9007199254740993", "v": "x"},
            headers={"Accept": "application/json;IEEE754Compatible=true"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "9007199254740993"
        assert r.headers["Location"].endswith("/big(9007199254740993)")


def test_a_write_cancelled_to_break_a_deadlock_with_a_sync_runs_again(databases: Any) -> None:
    """A sync run takes the table's data-version row before it writes rows (hold_version); a
    Salesforce write takes its row, then its data-version trigger waits for the run. When the
    run reaches that row, PostgreSQL cancels the write (the session that waited first), which
    has left nothing behind: it must run again once the run commits, not answer 503."""
    db = databases.create(SETUP)

    async def deadlock(c: httpx.Client, key: int) -> tuple[httpx.Response, int, int]:
        run = await deadlocks.closer(db)
        watch = await asyncpg.connect(db)
        try:
            relid = await run.fetchval("SELECT 'public.category'::regclass::oid")
            assert await run.fetchval(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1 AND tgname = 'r2sf_dv_upd'",
                relid,
            ), "the service installs the data-version triggers"
            before = await deadlocks.deadlocks(watch)
            await run.execute("BEGIN")
            await run.execute(
                "INSERT INTO r2sf.data_versions (relid, version) VALUES ($1, 0)"
                " ON CONFLICT DO NOTHING",
                relid,
            )
            await run.execute("SELECT 1 FROM r2sf.data_versions WHERE relid = $1 FOR UPDATE", relid)
            write = asyncio.ensure_future(
                asyncio.to_thread(c.patch, f"/Category({key})", json={"Name": "From SF"})
            )
            await deadlocks.wait_for_lock_wait(watch, "pid <> $1", run.get_server_pid())
            await run.execute(
                'UPDATE category SET "Description" = $1 WHERE "CategoryID" = $2', "synced", key
            )
            await run.execute("COMMIT")
            answer = await write
            return answer, before, await deadlocks.wait_for_deadlock(watch, before)
        finally:
            await run.close()
            await watch.close()

    async def scenario() -> tuple[int, httpx.Response, int, int]:
        async with deadlocks.victim_waits(db):
            with (
                serve(db, TOML) as (base, _app),
                httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=60) as c,
            ):
                created = await asyncio.to_thread(c.post, "/Category", json={"Name": "Contended"})
                assert created.status_code == 201, created.text
                key = created.json()["CategoryID"]
                return (key, *await deadlock(c, key))

    key, answer, before, after = asyncio.run(scenario())
    assert after > before  # the write really was cancelled by the deadlock detector
    assert answer.status_code == 204, answer.text
    stored = row(db, key)
    assert (stored["Name"], stored["Description"]) == ("From SF", "synced")
