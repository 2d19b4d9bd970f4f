"""Change tracking over real HTTP, replayed the way Salesforce polls (spec §4a): start with a
zero-row query and `Prefer: odata.track-changes`, change rows by SQL, OData writes and the sync,
follow every delta link, and compare each delta with the truth read from PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from odata import changes
from tests.conftest import Databases
from tests.live import serve
from tests.test_sync_support import Pair, q, x

SETUP = """
CREATE TABLE account (id int PRIMARY KEY, name text NOT NULL, region text,
                      revenue numeric(12, 2));
INSERT INTO account SELECT g, 'Account ' || g, CASE WHEN g % 2 = 0 THEN 'West' ELSE 'East' END,
                           g * 100 FROM generate_series(1, 20) g;
CREATE TABLE other (id int PRIMARY KEY, label text);
INSERT INTO other VALUES (1, 'one');
"""

TOML = """
[odata]
expose = ["public.*"]
page_size = 1000
change_tracking = false

[[odata.sets]]
table = "public.account"
name = "Account"
change_tracking = true
"""

TRACK = {"Prefer": "odata.track-changes"}


def start(client: httpx.Client, query: str = "$select=id,name&$count=true&$top=0") -> str:
    """Salesforce's first request when Track Data Changes is switched on."""
    r = client.get(f"/Account?{query}", headers=TRACK)
    assert r.status_code == 200, r.text
    assert r.headers["preference-applied"] == "odata.track-changes"
    body = r.json()
    assert body["value"] == [] and "@odata.nextLink" not in body
    link: str = body["@odata.deltaLink"]
    assert link.startswith("http://") and "$deltatoken=" in link and "$top" not in link
    return link


def poll(client: httpx.Client, link: str) -> tuple[list[dict[str, Any]], str, int]:
    """Follow a delta link through its pages: (entries, the new delta link, pages)."""
    entries: list[dict[str, Any]] = []
    pages = 0
    while True:
        r = client.get(link)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert body["@odata.context"].endswith("/$delta")
        entries += body["value"]
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return entries, body["@odata.deltaLink"], pages
        link = body["@odata.nextLink"]


def changed(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {e["id"]: e for e in entries if "@odata.context" not in e}


def removed(entries: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for e in entries:
        if "@odata.context" in e:
            assert e["@odata.context"].endswith("#Account/$deletedEntity")
            out[e["id"]] = e["reason"]
    return out


def truth(db: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    rows = q(db, "SELECT id, name FROM account WHERE id = ANY($1::int[])", ids)
    return {r["id"]: {"id": r["id"], "name": r["name"]} for r in rows}


def test_a_poll_reports_sql_changes_as_updates_and_deletes(client: httpx.Client, db: str) -> None:
    link = start(client)
    entries, link, _ = poll(client, link)
    assert entries == []  # nothing changed yet
    x(db, "UPDATE account SET name = 'renamed' WHERE id IN (3, 4)")
    x(db, "INSERT INTO account (id, name) VALUES (101, 'new')")
    x(db, "DELETE FROM account WHERE id = 5")
    entries, link, _ = poll(client, link)
    assert changed(entries) == truth(db, [3, 4, 101])
    assert removed(entries) == {"Account(5)": "deleted"}
    entries, _, _ = poll(client, link)
    assert entries == []


def test_net_changes_a_row_changed_many_times_appears_once(client: httpx.Client, db: str) -> None:
    link = start(client)
    for i in range(10):
        x(db, f"UPDATE account SET name = 'v{i}' WHERE id = 6")
    x(db, "INSERT INTO account (id, name) VALUES (102, 'brief')")
    x(db, "DELETE FROM account WHERE id = 102")
    entries, _, _ = poll(client, link)
    assert [e["id"] for e in entries if "@odata.context" not in e] == [6]
    assert changed(entries)[6]["name"] == "v9"
    # Inserted and deleted between the polls: its key is in the log and the row is gone.
    assert removed(entries) == {"Account(102)": "deleted"}


def test_odata_writes_are_tracked(client: httpx.Client, db: str) -> None:
    link = start(client)
    assert client.post("/Account", json={"id": 103, "name": "posted"}).status_code == 201
    assert client.patch("/Account(7)", json={"name": "patched"}).status_code == 204
    assert client.delete("/Account(8)").status_code == 204
    entries, _, _ = poll(client, link)
    assert changed(entries) == truth(db, [7, 103])
    assert removed(entries) == {"Account(8)": "deleted"}


def test_a_transaction_committing_after_the_poll_is_in_the_next_delta(
    client: httpx.Client, db: str
) -> None:
    link = start(client)

    async def scenario() -> tuple[list[dict[str, Any]], str]:
        conn = await asyncpg.connect(db)
        try:
            tx = conn.transaction()
            await tx.start()
            # Begun before the poll, committed after it: its xid is in the poll's snapshot's
            # in-progress list, so the next delta must still report it.
            await conn.execute("UPDATE account SET name = 'late' WHERE id = 9")
            entries, after, _ = await asyncio.to_thread(poll, client, link)
            await tx.commit()
            return entries, after
        finally:
            await conn.close()

    first, next_link = asyncio.run(scenario())
    assert 9 not in changed(first)
    x(db, "UPDATE account SET name = 'after' WHERE id = 10")
    entries, _, _ = poll(client, next_link)
    assert changed(entries) == truth(db, [9, 10])


def test_a_rolled_back_change_is_never_reported(client: httpx.Client, db: str) -> None:
    link = start(client)

    async def roll_back() -> None:
        conn = await asyncpg.connect(db)
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.execute("UPDATE account SET name = 'never' WHERE id = 11")
            await tx.rollback()
        finally:
            await conn.close()

    asyncio.run(roll_back())
    entries, _, _ = poll(client, link)
    assert entries == []


def test_a_row_leaving_the_filter_is_removed_with_reason_changed(
    client: httpx.Client, db: str
) -> None:
    link = start(client, "$select=id,name&$filter=region eq 'West'&$top=0")
    assert "filter=region" in link
    x(db, "UPDATE account SET region = 'East' WHERE id = 12")
    x(db, "UPDATE account SET name = 'still west' WHERE id = 14")
    entries, _, _ = poll(client, link)
    assert removed(entries) == {"Account(12)": "changed"}
    assert changed(entries) == truth(db, [14])


def test_two_pollers_with_different_filters_see_their_own_rows(
    client: httpx.Client, db: str
) -> None:
    west = start(client, "$select=id,name&$filter=region eq 'West'&$top=0")
    east = start(client, "$select=id,name&$filter=region eq 'East'&$top=0")
    x(db, "UPDATE account SET name = name || '!' WHERE id IN (15, 16)")  # 15 East, 16 West
    w, _, _ = poll(client, west)
    e, _, _ = poll(client, east)
    assert list(changed(w)) == [16] and removed(w) == {"Account(15)": "changed"}
    assert list(changed(e)) == [15] and removed(e) == {"Account(16)": "changed"}


def test_a_deleted_and_reinserted_key_is_reported_as_it_is_now(
    client: httpx.Client, db: str
) -> None:
    link = start(client)
    x(db, "DELETE FROM account WHERE id = 17")
    x(db, "INSERT INTO account (id, name) VALUES (17, 'back again')")
    entries, _, _ = poll(client, link)
    assert changed(entries) == {17: {"id": 17, "name": "back again"}}
    assert removed(entries) == {}


def test_5000_changes_come_in_pages_each_key_once(client: httpx.Client, db: str) -> None:
    link = start(client)
    x(db, "INSERT INTO account SELECT g, 'bulk ' || g FROM generate_series(10000, 14999) g")
    entries, _, pages = poll(client, link)
    assert pages == 5  # page_size 1000
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)) == 5000
    assert set(ids) == set(range(10000, 15000))


def test_a_page_inside_a_delta_is_stable_under_concurrent_writes(
    client: httpx.Client, db: str
) -> None:
    link = start(client)
    x(db, "UPDATE account SET name = name || '.' WHERE id BETWEEN 10000 AND 12499")
    first = client.get(link).json()
    assert len(first["value"]) == 1000 and "@odata.nextLink" in first
    # Written while the client pages: not part of this delta, in the next one.
    x(db, "UPDATE account SET name = 'moved on' WHERE id = 18")
    rest: list[dict[str, Any]] = []
    page = first
    while "@odata.nextLink" in page:
        page = client.get(page["@odata.nextLink"]).json()
        rest += page["value"]
    ids = [e["id"] for e in first["value"] + rest]
    assert sorted(ids) == list(range(10000, 12500))
    entries, _, _ = poll(client, page["@odata.deltaLink"])
    assert list(changed(entries)) == [18]


def test_changes_by_the_sync_are_tracked(
    client: httpx.Client, db: str, databases: Databases
) -> None:
    source = databases.create(
        "CREATE TABLE account (id int PRIMARY KEY, name text NOT NULL);"
        " INSERT INTO account SELECT id, name FROM (VALUES (1, 'synced 1'), (2, 'Account 2'),"
        " (200, 'from the warehouse')) v(id, name)"
    )
    pair = Pair(source, db)
    job = pair.job(name="accounts_ct", table="public.account", target="public.account", key=["id"])
    link = start(client)
    result = pair.sync(job)
    assert result.inserted == 1
    entries, _, _ = poll(client, link)
    assert changed(entries) == truth(db, [1, 200])  # 2 is unchanged: the sync did not write it


def test_an_untracked_set_is_answered_without_tracking(client: httpx.Client) -> None:
    r = client.get("/other?$top=0", headers=TRACK)
    assert r.status_code == 200
    assert "preference-applied" not in r.headers and "@odata.deltaLink" not in r.json()


def test_a_cached_answer_never_stands_in_for_a_tracking_request(client: httpx.Client) -> None:
    url = "/Account?$select=id&$top=1&$orderby=id"
    for _ in range(3):
        plain = client.get(url)
        assert "@odata.deltaLink" not in plain.json()
    tracked = client.get(url, headers=TRACK)
    assert tracked.headers["preference-applied"] == "odata.track-changes"
    assert "@odata.deltaLink" in tracked.json()


def test_a_tampered_token_is_refused(client: httpx.Client) -> None:
    link = start(client)
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    data, mac = token.split(".")
    forged = data[:-2] + ("A" if data[-2] != "A" else "B") + data[-1] + "." + mac
    r = client.get("/Account", params={"$deltatoken": forged})
    assert r.status_code == 400
    assert "altered" in r.json()["error"]["message"]
    r = client.get("/Account", params={"$deltatoken": "not-a-token"})
    assert r.status_code == 400


def test_an_expired_token_answers_410_with_what_to_do(client: httpx.Client, db: str) -> None:
    key = q(db, "SELECT value FROM r2sf.secrets WHERE name = 'delta_token'")[0][0]
    link = start(client)
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    payload = json.loads(changes._unb64(token.split(".")[0]))
    old = changes.DeltaToken(payload["s"], payload["m"], payload["x"], int(time.time()) - 8 * 86400)
    expired = changes.Tokens(key, 7 * 86400).encode(old)
    r = client.get("/Account", params={"$deltatoken": expired})
    assert r.status_code == 410
    message = r.json()["error"]["message"]
    assert "change_retention" in message and "Track Data Changes" in message


def test_paging_options_cannot_be_added_to_a_delta_link(client: httpx.Client) -> None:
    link = start(client)
    r = client.get(link + "&$top=5")
    assert r.status_code == 400 and "$top" in r.json()["error"]["message"]


@contextlib.contextmanager
def service(db: str, toml: str = TOML) -> Iterator[httpx.Client]:
    """A server of its own, for a test that changes the table's shape or empties it."""
    with (
        serve(db, toml) as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=30) as c,
    ):
        yield c


def test_a_truncate_since_the_token_answers_410(databases: Databases) -> None:
    db = databases.create(SETUP)
    with service(db) as c:
        link = start(c)
        x(db, "TRUNCATE account")
        r = c.get(link)
    assert r.status_code == 410 and "TRUNCATE" in r.json()["error"]["message"]


def test_a_token_for_a_set_whose_columns_changed_answers_410(databases: Databases) -> None:
    db = databases.create(SETUP)
    with service(db) as c:
        link = start(c)
    x(db, "ALTER TABLE account ADD COLUMN segment text")
    with service(db) as c:
        # The link names the first server's port; ask the second one with the same token.
        query = urlsplit(link).query
        r = c.get("/Account?" + query)
    assert r.status_code == 410 and "columns" in r.json()["error"]["message"]


def test_a_view_cannot_be_tracked(databases: Databases) -> None:
    from odata.catalog import SetOptions, load_model
    from odata.errors import CatalogError

    db = databases.create(SETUP + "CREATE VIEW west AS SELECT * FROM account;")

    async def load() -> None:
        conn = await asyncpg.connect(db)
        try:
            sets = [SetOptions("public.west", key=("id",), change_tracking=True)]
            await load_model(conn, expose=["public.*"], sets=sets)
        finally:
            await conn.close()

    with pytest.raises(CatalogError) as err:
        asyncio.run(load())
    assert "change_tracking needs a table" in str(err.value)


def test_a_delta_of_wide_rows_stays_under_the_page_byte_budget(databases: Databases) -> None:
    db = databases.create(
        "CREATE TABLE account (id int PRIMARY KEY, name text NOT NULL, region text,"
        " revenue numeric(12, 2));"
    )
    toml = TOML.replace("page_size = 1000", "page_size = 1000\nmax_page_bytes = 1000000")
    with service(db, toml) as c:
        link = start(c)
        # 300 rows of 10,000 two-byte characters: 6 MB in all, at most 1 MB a page.
        x(db, "INSERT INTO account SELECT g, repeat('é', 10000) FROM generate_series(1, 300) g")
        seen: list[int] = []
        while True:
            r = c.get(link)
            assert len(r.content) <= 1_000_000 + 25_000
            body = r.json()
            seen += [e["id"] for e in body["value"]]
            if "@odata.deltaLink" in body:
                break
            link = body["@odata.nextLink"]
    assert sorted(seen) == list(range(1, 301))


def test_the_status_page_shows_tracking_and_the_log_size(client: httpx.Client, db: str) -> None:
    kept = q(db, "SELECT count(*) FROM r2sf.changes WHERE relid = 'account'::regclass")[0][0]
    page = client.get(str(client.base_url).rstrip("/").removesuffix("/odata/v4") + "/").text
    row = page.split("<td>Account</td>", 1)[1].split("</tr>", 1)[0]
    assert f"on, {kept:,} change(s) kept" in row
    other = page.split("<td>other</td>", 1)[1].split("</tr>", 1)[0]
    assert "<td>off</td>" in other


def test_pruning_removes_only_changes_past_the_retention_in_batches(databases: Databases) -> None:
    db = databases.create(SETUP)
    with serve(db, TOML):
        pass  # installs the log and the triggers
    x(db, "UPDATE account SET name = name || '!'")  # 20 fresh changes
    x(
        db,
        "INSERT INTO r2sf.changes (relid, key, changed_at) SELECT 'account'::regclass,"
        " jsonb_build_array(g), now() - interval '8 days' FROM generate_series(1, 250) g",
    )

    async def prune() -> int:
        conn = await asyncpg.connect(db)
        try:
            return await changes.prune(conn, 7 * 86400, batch=100)
        finally:
            await conn.close()

    assert asyncio.run(prune()) == 250
    assert q(db, "SELECT count(*) FROM r2sf.changes")[0][0] == 20


def test_r2sf_status_prints_the_change_log_size(
    client: httpx.Client, db: str, tmp_path: Any
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    x(db, "UPDATE account SET name = name WHERE id = 1")  # at least one change logged
    kept = q(db, "SELECT count(*) FROM r2sf.changes WHERE relid = 'account'::regclass")[0][0]
    assert kept > 0
    config = Path(tmp_path) / "r2sf.toml"
    config.write_text(TOML)
    env = {k: v for k, v in os.environ.items() if k not in ("R2SF_CONFIG", "REDSHIFT_URL")}
    env.update(DATABASE_URL=db)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "r2sf"), "--config", str(config), "status"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert f"change tracking: public.account: {kept:,} change(s) kept" in done.stdout, done.stderr
