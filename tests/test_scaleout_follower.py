"""Reads on a follower (a real streaming replica, `pg_basebackup -R`) stay exact.

The replica replays real WAL from a throwaway primary. Replay is held back with
`pg_wal_replay_pause()` while the primary changes: the service then must not answer (or cache)
from the follower what the primary has already changed. The documented bound
(docs/architecture.md, "Past one dyno"): an answer reflects at least every change whose
notification this process has received; the follower answers only when it has replayed them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.live import serve
from tests.scaleout import Replicated, Unavailable, primary_with_replica

SETUP_SQL = """
create table items (id int primary key, label text not null);
insert into items select i, 'item ' || i from generate_series(1, 100) i;
"""


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    try:
        with primary_with_replica() as r:
            yield r
    except Unavailable as exc:
        pytest.skip(f"follower tests skipped: {exc}")


async def _sql(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        if ";" in sql.strip().rstrip(";"):  # a script
            await conn.execute(sql)
            return []
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def sql(url: str, text: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_sql(url, text, *args))


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for: {what}")
        time.sleep(0.05)


def caught_up(r: Replicated) -> bool:
    target = sql(r.primary, "select pg_current_wal_lsn()::text")[0][0]
    return bool(sql(r.replica, "select pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target)[0][0])


def metrics(c: httpx.Client) -> dict[str, float]:
    """`name{labels}` (without the worker label) -> value, from /metrics."""
    out: dict[str, float] = {}
    for m in re.finditer(r"^(r2sf_[a-z_]+)\{([^}]*)\} (\S+)$", c.get("/metrics").text, re.M):
        labels = ",".join(x for x in m[2].split(",") if not x.startswith("worker="))
        out[m[1] + (f"{{{labels}}}" if labels else "")] = float(m[3])
    return out


@pytest.fixture(scope="module")
def db(replicated: Replicated) -> str:
    name = "r2sf_follower"
    sql(replicated.primary, f"create database {name}")
    sql(replicated.on_primary(name), SETUP_SQL)
    wait_for("the replica to replay the set-up", lambda: caught_up(replicated))
    return name


@pytest.mark.parametrize("cache_mb", [64, 0], ids=["cache-on", "cache-off"])
def test_a_follower_that_has_not_replayed_a_change_never_answers_for_it(
    replicated: Replicated, db: str, cache_mb: int
) -> None:
    r = replicated
    primary, replica = r.on_primary(db), r.on_replica(db)
    sql(primary, "update items set label = 'item ' || id")
    toml = (
        f'[odata]\nexpose = ["public.items"]\n[server]\ncache_min_uses = 1\ncache_mb = {cache_mb}\n'
    )
    env = {"DATABASE_FOLLOWER_URL": replica}
    with (
        serve(primary, toml, env=env) as (base, _app),
        httpx.Client(base_url=base, auth=("sf", "secret"), timeout=30) as c,
    ):
        wait_for("the replica to replay the triggers", lambda: caught_up(r))
        fallbacks = metrics(c)["r2sf_follower_fallbacks_total"]
        url = "/odata/v4/items?$filter=id le 3&$select=label"
        first = c.get(url)
        assert [e["label"] for e in first.json()["value"]] == ["item 1", "item 2", "item 3"]
        # The follower answered: its backend ran the read, and nothing fell back.
        ran = "select count(*) from pg_stat_activity where application_name = 'r2sf-odata'"
        assert sql(replica, ran + " and query ilike '%items%'")[0][0] >= 1
        assert metrics(c)["r2sf_follower_fallbacks_total"] == fallbacks

        # Hold replay back, then change the primary.
        sql(replica, "select pg_wal_replay_pause()")
        wait_for(
            "replay to pause",
            lambda: sql(replica, "select pg_get_wal_replay_pause_state()")[0][0] == "paused",
        )
        key = 'r2sf_data_version{entity_set="items"}'
        before = metrics(c)[key]
        sql(primary, "update items set label = 'changed' where id <= 3")
        wait_for("the change notification", lambda: metrics(c)[key] > before)
        assert sql(replica, "select label from items where id = 1")[0][0] == "item 1"
        wait_for("WAL to reach the paused replica", lambda: metrics(c).get(
            "r2sf_follower_replay_lag_bytes", 0) > 0)  # fmt: skip

        fresh = c.get(url)
        assert [e["label"] for e in fresh.json()["value"]] == ["changed"] * 3
        assert metrics(c)["r2sf_follower_fallbacks_total"] > fallbacks
        again = c.get(url)
        assert again.json() == fresh.json()
        if cache_mb:
            assert fresh.headers["ETag"] != first.headers["ETag"]
            assert again.headers["ETag"] == fresh.headers["ETag"]

        # Read your writes: what this process wrote is read back while replay is still held.
        made = c.post("/odata/v4/items", json={"id": 500 + cache_mb, "label": "new"})
        assert made.status_code == 201, made.text
        got = c.get(f"/odata/v4/items({500 + cache_mb})")
        assert got.status_code == 200 and got.json()["label"] == "new"
        written = c.get(url)  # the write drew a new version of the set
        assert written.json() == fresh.json()

        # Replay resumes: the follower answers again, and what is cached stays current.
        sql(replica, "select pg_wal_replay_resume()")
        wait_for("the replica to catch up", lambda: caught_up(r))
        assert metrics(c)["r2sf_follower_replay_lag_bytes"] == 0
        settled = metrics(c)["r2sf_follower_fallbacks_total"]
        other = c.get("/odata/v4/items?$filter=id le 4&$select=label")
        assert [e["label"] for e in other.json()["value"]] == ["changed"] * 3 + ["item 4"]
        assert metrics(c)["r2sf_follower_fallbacks_total"] == settled
        last = c.get(url)
        assert last.json() == fresh.json()
        if cache_mb:
            assert last.headers["ETag"] == written.headers["ETag"] != fresh.headers["ETag"]
    sql(primary, f"delete from items where id = {500 + cache_mb}")
