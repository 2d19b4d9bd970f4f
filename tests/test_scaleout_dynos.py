"""Several web dynos: `r2sf serve` processes on one database give the same answers and ETags,
and every one of them sees every change (its own writes, another process's, a manual UPDATE)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import Databases
from tests.scaleout import free_port

R2SF = str(Path(sys.executable).parent / "r2sf")
SETUP_SQL = """
create table items (id int primary key, label text not null, amount numeric(12,2));
insert into items select i, 'item ' || i, i * 2.5 from generate_series(1, 500) i;
create view big_items as select id, label from items where amount > 1000;
"""
TOML = """
[odata]
expose = ["public.items", "public.big_items"]

[[odata.sets]]
table = "public.big_items"
key = ["id"]

[server]
cache_min_uses = 1
"""
# Behind Heroku's router every dyno sees the app's host name, whatever port it listens on.
ROUTER = {"Host": "r2sf-test.herokuapp.com", "X-Forwarded-Proto": "https"}
URLS = [
    "/odata/v4/items?$filter=amount gt 100 and id le 60&$orderby=label desc&$count=true",
    "/odata/v4/items?$top=10&$skip=20",
    "/odata/v4/items(7)",
    "/odata/v4/items/$count",
    "/odata/v4/big_items?$count=true&$top=3",
    "/odata/v4/$metadata",
]


@pytest.fixture(scope="module")
def dynos(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    url = databases.create(SETUP_SQL)
    config = tmp_path_factory.mktemp("dynos") / "r2sf.toml"
    config.write_text(TOML)
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "R2SF_CACHE_MB")}
    env.update(DATABASE_URL=url, ODATA_CREDENTIALS="sf:secret", R2SF_CONFIG=str(config))
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [R2SF, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for base, proc in zip(bases, procs, strict=True):
            wait_for(f"{base} to start", lambda b=base, p=proc: _healthy(b, p))  # type: ignore[misc]
        yield [*bases, url]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)


def _healthy(base: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"r2sf serve exited with {proc.returncode}")
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for: {what}")
        time.sleep(0.05)


def execute(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def answers(base: str) -> list[tuple[int, str, str | None]]:
    with httpx.Client(base_url=base, auth=("sf", "secret"), headers=ROUTER, timeout=30) as c:
        out = []
        for u in URLS:
            r = c.get(u)
            out.append((r.status_code, r.text, r.headers.get("ETag")))
        return out


def test_two_serve_processes_give_the_same_answers_and_etags_and_see_every_change(
    dynos: list[str],
) -> None:
    a, b, db = dynos
    # Asked twice: the second answers come from each process's cache.
    first = [answers(a), answers(b), answers(a), answers(b)]
    assert all(r[0] == 200 for r in first[0]), first[0]
    assert first[0] == first[1] == first[2] == first[3]
    assert all(tag for _, _, tag in first[0][:-1])  # every data answer carries an ETag

    # A manual UPDATE (as Heroku Connect or a psql session would): both processes see it.
    execute(db, "update items set label = 'renamed' where id in (7, 45, 460)")
    wait_for(
        "both to see the UPDATE",
        lambda: all("renamed" in ans[2][1] for ans in (answers(a), answers(b))),
    )
    after = [answers(a), answers(b)]
    assert after[0] == after[1]
    assert after[0][2][1] != first[0][2][1] and after[0][2][2] != first[0][2][2]
    assert '"renamed"' in after[0][0][1] and after[0][0][2] != first[0][0][2]
    # The view's first page (ids 401-403) is unchanged, but its version moved with its table.
    assert after[0][4][1] == first[0][4][1] and after[0][4][2] != first[0][4][2]
    assert after[0][5] == first[0][5]  # $metadata does not change with the data

    # A write through one process is seen by the other, in its cached list views too.
    with httpx.Client(base_url=a, auth=("sf", "secret"), headers=ROUTER, timeout=30) as c:
        assert c.patch("/odata/v4/items(450)", json={"amount": "1.00"}).status_code == 204
    assert '"@odata.count":100' in first[0][4][1]
    wait_for("b to see a's write", lambda: '"@odata.count":99' in answers(b)[4][1])
    final = [answers(a), answers(b)]
    assert final[0] == final[1]
    assert final[0][4][2] != after[0][4][2]
