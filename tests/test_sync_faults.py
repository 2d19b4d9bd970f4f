"""Faults a clock process meets over months, each ending with the target exactly as before, a
clear error in the run history and a correct next run: the warehouse dropping mid-stream or
refusing connections (through the Redshift shim), the target restarting mid-merge (a throwaway
PostgreSQL cluster this module starts itself), the target running out of temporary space while
staging (temp_file_limit), a lock held too long, a job over its timeout, a non-UTC server."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sync.errors import JobTimeout, SyncError, TargetError, TransientError
from sync.progress import Reporter
from tests import deadlocks
from tests.conftest import Databases
from tests.redshift_shim import RedshiftShim
from tests.test_sync_cli import SOURCE_SETUP, TARGET_SETUP, end_stalled_queries, wait_for_sleep
from tests.test_sync_support import Pair, changed, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(SOURCE_SETUP), databases.create(TARGET_SETUP))


def items(url: str, rows: int) -> str:
    name = unique("items")
    x(
        url,
        f"CREATE TABLE {name} (id int PRIMARY KEY, label text);"
        f" INSERT INTO {name} SELECT g, 'item ' || g FROM generate_series(1, {rows}) g",
    )
    return name


def last_run(target: str, job: str) -> tuple[str, str | None]:
    rows = q(target, "SELECT status, error FROM r2sf.sync_runs WHERE job = $1"
                     " ORDER BY id DESC LIMIT 1", job)  # fmt: skip
    return rows[0][0], rows[0][1]


def wait_for_fetch_sleep(url: str, timeout: float = 30) -> None:
    """Wait until the extract's FETCH (whose text names no table) sleeps in the source."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = q(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                      " AND application_name = 'r2sf sync' AND datname = current_database()")  # fmt: skip
        if rows[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError("the extract never reached pg_sleep")


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `fn` in a thread; the list gets its result or the exception it raised."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_the_warehouse_dropping_mid_stream_writes_nothing_and_is_recorded(
    pair: Pair,
) -> None:
    src = items(pair.source, 5000)
    with RedshiftShim(pair.source) as shim:
        good = pair.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                        key=["id"], fetch_size=500)  # fmt: skip
        pair.sync(good, source_url=shim.url())
        x(pair.source, f"UPDATE {src} SET label = label || ' v2' WHERE id % 2 = 0")
        before = pair.versions(f"public.{src}")
        stall = pair.job(name=src, query=f"select id, label from {src} where stall_at(id, 3000)",
                         target=f"public.{src}", key=["id"], fetch_size=500)  # fmt: skip
        x(pair.source, "UPDATE ctl SET pause = true")
        try:
            thread, out = in_thread(lambda: pair.sync(stall, source_url=shim.url()))
            wait_for_fetch_sleep(pair.source)
            assert shim.drop_connections() >= 1
            thread.join(60)
        finally:
            x(pair.source, "UPDATE ctl SET pause = false")
            q(pair.source, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                           " WHERE application_name = 'r2sf sync' AND datname = current_database()")  # fmt: skip
        (err,) = out
        assert isinstance(err, TransientError), err
        assert "warehouse connection failed or dropped" in err.message
        assert changed(before, pair.versions(f"public.{src}")) == set()
        status, error = last_run(pair.target, src)
        assert status == "failed" and error is not None and "dropped" in error
        again = pair.sync(good, source_url=shim.url())
    assert again.updated == 2500
    assert changed(before, pair.versions(f"public.{src}")) == set(range(2, 5001, 2))


def test_a_refused_warehouse_is_retried_with_backoff_then_recorded(pair: Pair) -> None:
    import asyncio

    from sync.schedule import run_with_retries

    src = items(pair.source, 10)
    job = pair.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                   key=["id"])  # fmt: skip
    with RedshiftShim(pair.source) as shim:
        url = shim.url()
    log = io.StringIO()
    with pytest.raises(TransientError) as err:
        asyncio.run(run_with_retries(job, pair.target, url, Reporter(log, tty=False),
                                     max_retries=2, base_delay=0.05))  # fmt: skip
    assert "Connection refused" in err.value.message or "refused" in err.value.message.lower()
    lines = log.getvalue()
    assert "event=retrying job=" + src + " attempt=1 in_seconds=0.05" in lines
    assert "attempt=2 in_seconds=0.1" in lines and "event=giving_up" in lines
    rows = q(pair.target, "SELECT status, error FROM r2sf.sync_runs WHERE job = $1", src)
    assert [r[0] for r in rows] == ["failed"] * 3  # every attempt is in the history
    assert q(pair.target, "SELECT to_regclass($1)", f"public.{src}")[0][0] is None
    with RedshiftShim(pair.source) as shim:
        assert pair.sync(job, source_url=shim.url()).inserted == 10


@pytest.fixture(scope="module")
def throwaway_server() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL cluster of this module's own (pgserver's binaries), and a way to restart it.
    Never the shared test server: restarting that would break every other test."""
    import pgserver
    from pgserver._commands import pg_ctl

    datadir = tempfile.mkdtemp(prefix="r2sf-restart-")
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    user = "pgserver" if os.geteuid() == 0 else None

    def restart() -> None:
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=user, timeout=60)

    try:
        yield server.get_uri(), restart
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


def test_the_target_restarting_mid_merge_rolls_back_and_the_next_run_completes(
    pair: Pair, throwaway_server: tuple[str, Callable[[], None]]
) -> None:
    import asyncio

    from tests.conftest import _admin, _with_database

    base, restart = throwaway_server
    name = unique("restart")
    asyncio.run(_admin(base, f'CREATE DATABASE "{name}"'))
    target = _with_database(base, name)
    x(target, TARGET_SETUP)
    local = Pair(pair.source, target)
    src = items(pair.source, 1000)
    job = local.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                    key=["id"])  # fmt: skip
    local.sync(job)
    x(target, f"CREATE TRIGGER stall BEFORE UPDATE ON {src} FOR EACH ROW"
              " WHEN (OLD.id = 500) EXECUTE FUNCTION stall()")  # fmt: skip
    x(pair.source, f"UPDATE {src} SET label = 'v2' WHERE id > 100")
    before = local.versions(f"public.{src}")
    x(target, "UPDATE ctl SET pause = true")
    thread, out = in_thread(lambda: local.sync(job))
    wait_for_sleep(target, "r2sf sync %", src)
    x(target, "UPDATE ctl SET pause = false")  # committed: the restarted server reads false
    restart()
    thread.join(60)
    (err,) = out
    assert isinstance(err, TransientError), err
    assert "target database closed the connection" in err.message
    assert changed(before, local.versions(f"public.{src}")) == set()
    status, error = last_run(target, src)
    assert status == "failed" and error is not None and "restarted" in error
    assert local.sync(job).updated == 900
    assert changed(before, local.versions(f"public.{src}")) == set(range(101, 1001))


def test_running_out_of_temporary_space_while_staging_writes_nothing(
    pair: Pair, databases: Databases
) -> None:
    target = databases.create()
    local = Pair(pair.source, target)
    src = items(pair.source, 60000)
    job = local.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                    key=["id"])  # fmt: skip
    local.sync(job)
    x(pair.source, f"UPDATE {src} SET label = 'v2' WHERE id % 3 = 0")
    before = local.versions(f"public.{src}")
    database = urlsplit(target).path.lstrip("/")
    # The staging table's unique index sorts every key: with little memory it spills to
    # temporary files, which temp_file_limit caps as a full disk would.
    x(target, f'ALTER DATABASE "{database}" SET temp_file_limit = \'64kB\';'
              f' ALTER DATABASE "{database}" SET maintenance_work_mem = \'1MB\'')  # fmt: skip
    try:
        with pytest.raises(TargetError) as err:
            local.sync(job)
    finally:
        x(target, f'ALTER DATABASE "{database}" RESET temp_file_limit;'
                  f' ALTER DATABASE "{database}" RESET maintenance_work_mem')  # fmt: skip
    assert "ran out of space for the run's temporary data" in err.value.message
    assert "temp_file_limit" in err.value.message
    assert changed(before, local.versions(f"public.{src}")) == set()
    status, error = last_run(target, src)
    assert status == "failed" and error is not None and "ran out of space" in error
    assert local.sync(job).updated == 20000


def test_a_lock_held_longer_than_lock_timeout_fails_the_run_cleanly(pair: Pair) -> None:
    import asyncio

    import asyncpg

    src = items(pair.source, 50)
    job = pair.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                   key=["id"], lock_timeout=1)  # fmt: skip
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET label = 'v2'")

    async def hold_then_sync() -> BaseException | None:
        conn = await asyncpg.connect(pair.target)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {src} IN ACCESS EXCLUSIVE MODE")
                try:
                    await asyncio.to_thread(pair.sync, job)
                except SyncError as exc:
                    return exc
        finally:
            await conn.close()
        return None

    err = asyncio.run(hold_then_sync())
    assert isinstance(err, TargetError) and "lock_timeout" in err.message
    assert last_run(pair.target, src)[0] == "failed"
    assert pair.sync(job).updated == 50


def test_a_run_over_its_timeout_is_stopped_and_recorded(pair: Pair) -> None:
    src = items(pair.source, 20)
    job = pair.job(name=src, query=f"select id, label from {src} where stall_at(id, 10)",
                   target=f"public.{src}", key=["id"], timeout=2)  # fmt: skip
    x(pair.source, "UPDATE ctl SET pause = true")
    try:
        with pytest.raises(JobTimeout) as err:
            pair.sync(job)
    finally:
        x(pair.source, "UPDATE ctl SET pause = false")
        end_stalled_queries(pair.source, src)
    assert "stopped after 2 s, the job's timeout" in err.value.message
    assert q(pair.target, "SELECT to_regclass($1)", f"public.{src}")[0][0] is None
    status, error = last_run(pair.target, src)
    assert status == "failed" and error is not None and "timeout" in error


def test_the_target_session_is_utc_whatever_the_server_default(
    pair: Pair, databases: Databases
) -> None:
    target = databases.create()
    database = urlsplit(target).path.lstrip("/")
    x(target, f"ALTER DATABASE \"{database}\" SET timezone = 'Asia/Kolkata'")
    src = unique("tz")
    x(pair.source, f"CREATE TABLE {src} (id int PRIMARY KEY, at timestamptz);"
                   f" INSERT INTO {src} VALUES (1, '2024-01-01 00:00:00+00')")  # fmt: skip
    # The target keeps wall-clock times: a timestamptz becomes the UTC time of day.
    x(target, f"CREATE TABLE {src} (id int PRIMARY KEY, at timestamp)")
    local = Pair(pair.source, target)
    job = local.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"])
    local.sync(job)
    assert q(target, f"SELECT at::text FROM {src}")[0][0] == "2024-01-01 00:00:00"


def test_a_run_cancelled_to_break_a_deadlock_is_retried_and_completes(pair: Pair) -> None:
    """Another session writing the target (an OData write, Heroku Connect) can deadlock with a
    run: here it holds a row the run deletes, and once the run waits for that row it writes
    another row, whose data-version trigger waits for the row the run's UPDATE took in
    `r2sf.data_versions`. PostgreSQL cancels the run, the one that waited first; the run is a
    TransientError, retried, and the retry writes everything."""
    import asyncio

    import asyncpg

    from odata.versions import install_triggers
    from sync.schedule import run_with_retries

    src = items(pair.source, 50)
    job = pair.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                   key=["id"], deletes="hard")  # fmt: skip
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET label = 'v2' WHERE id = 1; DELETE FROM {src} WHERE id = 50")
    log = io.StringIO()

    async def deadlock() -> Any:
        other = await deadlocks.closer(pair.target)
        watch = await asyncpg.connect(pair.target)
        try:
            oid = await other.fetchval("SELECT $1::regclass::oid", f"public.{src}")
            assert await install_triggers(other, "public", src, oid)
            before = await deadlocks.deadlocks(watch)
            await other.execute("BEGIN")
            await other.execute(f"SELECT 1 FROM {src} WHERE id = 50 FOR UPDATE")
            async with deadlocks.victim_waits(pair.target):  # the run's session
                run = asyncio.ensure_future(asyncio.to_thread(lambda: asyncio.run(
                    run_with_retries(job, pair.target, pair.source, Reporter(log, tty=False),
                                     max_retries=2, base_delay=0.05)
                )))  # fmt: skip
                await deadlocks.wait_for_lock_wait(
                    watch, "application_name = $1", f"r2sf sync {src}"[:63]
                )
                await other.execute(f"UPDATE {src} SET label = 'edited' WHERE id = 2")
                await other.execute("COMMIT")
                result = await run
            return result, await deadlocks.wait_for_deadlock(watch, before) - before
        finally:
            await other.close()
            await watch.close()

    result, seen = asyncio.run(deadlock())
    assert seen >= 1  # the run really was cancelled by the deadlock detector
    assert "event=retrying job=" + src + " attempt=1" in log.getvalue()
    runs = q(pair.target, "SELECT status, error FROM r2sf.sync_runs WHERE job = $1"
                          " ORDER BY id DESC LIMIT 2", src)  # fmt: skip
    assert runs[0][0] == "ok" and runs[1][0] == "failed"
    assert "cancelled the run to break a conflict" in runs[1][1]
    assert (result.updated, result.deleted) == (2, 1)  # row 1 from the source, row 2 repaired
    rows = q(pair.target, f"SELECT id, label FROM {src} WHERE id IN (1, 2, 50) ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "v2"), (2, "item 2")]
