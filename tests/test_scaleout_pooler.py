"""Through PgBouncer in transaction mode (Heroku's DATABASE_CONNECTION_POOL_URL): OData reads and
writes, `r2sf sync` (its job lock), `migrate`, `status`, `check`.

The pooler is real (Debian's pgbouncer, started by the `bouncer` fixture) with fewer server
connections than the service's pool, so consecutive transactions of one client land on
different server connections: session state (a prepared statement, a session lock, a SET)
would be lost or leak.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from service.check import run_check
from service.config import load_settings
from tests.conftest import Databases, _with_database
from tests.live import serve
from tests.scaleout import Bouncer, Unavailable, pgbouncer

R2SF = str(Path(sys.executable).parent / "r2sf")

SETUP_SQL = """
create table items (id int primary key, label text not null, amount numeric(12,2));
insert into items select i, 'item ' || i, i * 1.5 from generate_series(1, 300) i;
create table src (id int primary key, label text not null);
insert into src select i, 'row ' || i from generate_series(1, 2000) i;
"""
TOML = """
[odata]
expose = ["public.items"]
[server]
cache_min_uses = 1
pool_size = 8
"""


@pytest.fixture(scope="module")
def bouncer(server_url: str) -> Iterator[Bouncer]:
    try:
        with pgbouncer(server_url, pool_size=3) as b:
            yield b
    except Unavailable as exc:
        pytest.skip(f"PgBouncer tests skipped: {exc}")


@pytest.fixture(scope="module")
def dbname(databases: Databases) -> str:
    return urlsplit(databases.create(SETUP_SQL)).path.lstrip("/")


def _direct(server_url: str, dbname: str) -> str:
    return _with_database(server_url, dbname)


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def test_odata_reads_and_writes_through_the_pooler(
    bouncer: Bouncer, server_url: str, dbname: str
) -> None:
    direct = _direct(server_url, dbname)
    env = {"DATABASE_CONNECTION_POOL_URL": bouncer.url(dbname)}
    urls = [
        "/items?$filter=id le 20&$orderby=label desc&$count=true",
        "/items?$top=5&$skip=7&$select=label",
        "/items(17)",
        "/items/$count?$filter=amount gt 100",
    ]
    with (
        serve(direct, TOML, env=env) as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=30) as c,
    ):

        def count(i: int) -> tuple[int, str]:
            # A different URL each time: every request runs its statements.
            r = c.get(f"/items/$count?$filter=id le {i + 1} and amount ge 0")
            return r.status_code, r.text

        # Concurrent reads: more client transactions than the pooler's 3 server connections.
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(count, range(200)))
        assert answers == [(200, str(min(i + 1, 300))) for i in range(200)]
        for url in urls:
            assert c.get(url).status_code == 200, url
        assert '"@odata.count":20' in c.get(urls[0]).text
        assert c.get(urls[3]).text == "234"  # amount = 1.5 * id > 100 for id 67..300
        # Writes, and reads of what was written, through the pooler.
        made = c.post("/items", json={"id": 1000, "label": "new", "amount": "2.5"})
        assert made.status_code == 201, made.text
        assert c.patch("/items(1000)", json={"label": "renamed"}).status_code == 204
        assert c.get("/items(1000)").json()["label"] == "renamed"
        assert c.delete("/items(200)").status_code == 204
        assert c.get("/items(200)").status_code == 404
        assert c.get(urls[3]).text == "233"
    rows = asyncio.run(_fetch(direct, "select label from items where id in (200, 1000)"))
    assert [r["label"] for r in rows] == ["renamed"]


def _locks(direct: str) -> list[asyncpg.Record]:
    return asyncio.run(
        _fetch(
            direct,
            "select pid from pg_locks where locktype = 'advisory'"
            " and database = (select oid from pg_database where datname = current_database())",
        )
    )


def _r2sf(target: str, source: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("R2SF_CONFIG", "PORT")}
    env.update(DATABASE_URL=target, REDSHIFT_URL=source, ODATA_CREDENTIALS="sf:secret")
    return subprocess.run(
        [R2SF, *args, "--config", str(tmp / "r2sf.toml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
    )


def test_sync_migrate_and_status_through_the_pooler_leave_no_lock_behind(
    bouncer: Bouncer, server_url: str, dbname: str, tmp_path: Path
) -> None:
    direct, pooled = _direct(server_url, dbname), bouncer.url(dbname)
    (tmp_path / "r2sf.toml").write_text(
        '[[sync.jobs]]\nname = "copy"\nquery = "select id, label from src"\n'
        'target = "public.copied"\nkey = ["id"]\n'
    )
    assert _r2sf(pooled, direct, tmp_path, "migrate").returncode == 0
    first = _r2sf(pooled, direct, tmp_path, "sync")
    assert first.returncode == 0, first.stderr
    asyncio.run(_fetch(direct, "update src set label = label || '!' where id % 10 = 0"))
    second = _r2sf(pooled, direct, tmp_path, "sync")
    assert second.returncode == 0, second.stderr
    assert "updated=200 " in second.stdout + second.stderr
    # The job lock ended with the run's transaction: none is left on any server connection.
    assert _locks(direct) == []

    async def held_run() -> tuple[subprocess.CompletedProcess[str], int]:
        holder = await asyncpg.connect(
            pooled, statement_cache_size=0, server_settings={"application_name": "holder-x"}
        )
        try:
            await holder.execute("BEGIN")
            from sync.state import try_lock

            assert await try_lock(holder, "copy") is None
            pid = await holder.fetchval("select pg_backend_pid()")
            run = await asyncio.to_thread(_r2sf, pooled, direct, tmp_path, "sync")
            return run, pid
        finally:
            holder.terminate()

    blocked, pid = asyncio.run(held_run())
    assert blocked.returncode == 3, blocked.stderr
    assert f"pid {pid}" in blocked.stderr and "holder-x" in blocked.stderr
    assert _r2sf(pooled, direct, tmp_path, "sync").returncode == 0
    status = _r2sf(pooled, direct, tmp_path, "status")
    assert status.returncode == 0 and "copy" in status.stdout, status.stdout + status.stderr
    assert _locks(direct) == []


def test_fingerprint_reruns_through_the_pooler_keep_and_reuse_their_summary(
    bouncer: Bouncer, server_url: str, dbname: str, tmp_path: Path
) -> None:
    """Summaries, staging and the kept summary live in one transaction (temporary tables ON
    COMMIT DROP, SET LOCAL), so a fingerprint rerun works on a pooled connection too."""
    direct, pooled = _direct(server_url, dbname), bouncer.url(dbname)
    (tmp_path / "r2sf.toml").write_text(
        '[[sync.jobs]]\nname = "fp"\nquery = "select id, label from src"\n'
        'target = "public.fp_copied"\nkey = ["id"]\ndeletes = "hard"\n'
        'compare = "fingerprints"\n'
    )
    runs = []
    change = "update src set label = label || '?' where id in (3, 1500)"
    for sql in ("", change, change, ""):
        if sql:
            asyncio.run(_fetch(direct, sql))
        run = _r2sf(pooled, direct, tmp_path, "sync")
        assert run.returncode == 0, run.stderr
        runs.append(run.stdout + run.stderr)
    assert "compared=full" in runs[0]  # the first load
    assert "target_summary=computed" in runs[1] and "updated=2 " in runs[1]
    assert "target_summary=kept" in runs[2] and "updated=2 " in runs[2]
    assert "target_summary=kept" in runs[3] and "updated=0 " in runs[3]
    assert _locks(direct) == []


def test_check_tells_which_url_is_the_pooler_and_that_prepared_statements_do_not_pass(
    bouncer: Bouncer, server_url: str, dbname: str, tmp_path: Path
) -> None:
    direct = _direct(server_url, dbname)
    (tmp_path / "r2sf.toml").write_text(TOML)
    settings = load_settings(
        str(tmp_path / "r2sf.toml"),
        {
            "DATABASE_URL": direct,
            "DATABASE_CONNECTION_POOL_URL": bouncer.url(dbname),
            "ODATA_CREDENTIALS": "sf:secret",
        },
    )
    out = io.StringIO()
    found = asyncio.run(run_check(settings, out))
    lines = {ln.split()[0]: ln for ln in out.getvalue().splitlines() if ln.startswith("DATABASE")}
    assert "direct, the primary" in lines["DATABASE_URL"]
    assert "the change listener" in lines["DATABASE_URL"]
    pool_line = lines["DATABASE_CONNECTION_POOL_URL"]
    # PgBouncer 1.18 (Debian bookworm) passes no prepared statement through (1.21+ can).
    assert "a pooler" in pool_line and "prepared statements do not pass through" in pool_line
    assert "OData reads" in pool_line and "OData writes" in pool_line
    assert found.errors == []

    # The pooler given as DATABASE_URL is an error: LISTEN and the sync need the primary.
    wrong = load_settings(
        str(tmp_path / "r2sf.toml"),
        {"DATABASE_URL": bouncer.url(dbname), "ODATA_CREDENTIALS": "sf:secret"},
    )
    found = asyncio.run(run_check(wrong, io.StringIO()))
    assert any("DATABASE_URL leads to a pooler" in e for e in found.errors)
