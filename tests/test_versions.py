"""Data versions follow commit order (odata/versions.py): a writer that has to wait for another
writer of the same table draws its number after that one commits, so a notification is never
older than one already sent, and concurrent writers leave no stale cached answer."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import httpx

from sync.config import Job
from sync.engine import run_job
from sync.progress import Reporter
from tests.conftest import Databases
from tests.live import serve
from tests.test_odata_cache import wait_until
from tests.test_sync_support import _Null, q, x

TOML = '[odata]\nexpose = ["public.*"]\n\n[server]\ncache_min_uses = 1\n'


async def _waiting_for_a_lock(conn: asyncpg.Connection, pid: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
    )


def test_a_writer_that_waits_draws_its_version_after_the_other_commits(
    databases: Databases,
) -> None:
    db = databases.create(
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)"
    )
    with serve(db, TOML):
        pass  # installs the data-version triggers

    async def scenario() -> tuple[int, int]:
        a, b, c = [await asyncpg.connect(db) for _ in range(3)]
        try:
            first = a.transaction()
            await first.start()
            await a.execute("UPDATE t SET v = 1 WHERE id = 1")  # t's version row stays locked
            # Another row: the second writer waits only for t's version row, in its trigger.
            second = asyncio.ensure_future(b.execute("UPDATE t SET v = 2 WHERE id = 2"))
            for _ in range(500):
                if await _waiting_for_a_lock(c, b.get_server_pid()):
                    break
                await asyncio.sleep(0.01)
            # A number drawn while the second writer waits: the second's must come after it.
            meanwhile = int(await c.fetchval("SELECT nextval('r2sf.data_version_seq')"))
            await first.commit()
            await second
            final = await c.fetchval(
                "SELECT version FROM r2sf.data_versions WHERE relid = 't'::regclass"
            )
            return meanwhile, int(final)
        finally:
            for conn in (a, b, c):
                await conn.close()

    meanwhile, final = asyncio.run(scenario())
    assert final > meanwhile


def test_odata_writes_during_a_sync_leave_no_stale_cached_answer(databases: Databases) -> None:
    source = databases.create(
        "CREATE TABLE item (id int PRIMARY KEY, label text);"
        " INSERT INTO item SELECT g, 'v1 ' || g FROM generate_series(1, 2000) g"
    )
    db = databases.create(
        "CREATE TABLE item (id int PRIMARY KEY, label text);"
        " INSERT INTO item SELECT g, 'v0 ' || g FROM generate_series(1, 2000) g"
    )
    job = Job.model_validate(
        {"name": "items", "table": "public.item", "target": "public.item", "key": ["id"]}
    )
    url = "/item?$orderby=id&$top=2000"
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            for round_ in range(3):
                x(source, f"UPDATE item SET label = 'v{round_ + 2} ' || id WHERE id % 3 = {round_}")
                asyncio.run(
                    run_job(
                        job, target_url=db, source_url=source,
                        reporter=Reporter(stream=_Null(), tty=False),
                    )
                )  # fmt: skip
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with (
        serve(db, TOML) as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=60) as client,
    ):
        writer = threading.Thread(target=sync)
        writer.start()
        n = 0
        while writer.is_alive():
            n += 1
            assert (
                client.patch(f"/item({n % 2000 + 1})", json={"label": f"odata {n}"}).status_code
                == 204
            )
            assert client.get(url).status_code == 200  # kept in the cache between writes
        writer.join()
        assert not errors, errors
        truth = [
            {"id": r["id"], "label": r["label"]} for r in q(db, "SELECT * FROM item ORDER BY id")
        ]

        def current() -> bool:
            body: dict[str, Any] = client.get(url).json()
            return body["value"] == truth

        # Once the last notification has arrived the cached answer is the table as it is.
        wait_until(current, 5, "the cached answer still differs from the table")
        assert client.get(url).json()["value"] == truth
