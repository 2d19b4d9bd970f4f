"""The clock process over restarts and slow runs: a slot missed while it was down runs once at
start-up (not never, not once per missed slot); a job never overlaps itself; a run over its
timeout is stopped and recorded while the scheduler goes on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sync import schema
from sync.errors import JobTimeout, LockHeld
from sync.progress import Reporter
from sync.schedule import missed, run_scheduler
from tests.conftest import Databases
from tests.test_sync_cli import SOURCE_SETUP, TARGET_SETUP
from tests.test_sync_support import Pair, execute, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(SOURCE_SETUP), databases.create(TARGET_SETUP))


class Watch:
    """A log stream that stops the scheduler once `until` holds for the lines so far."""

    def __init__(self, until: Callable[[list[str]], bool]) -> None:
        self.lines: list[str] = []
        self.until = until
        self.stop = asyncio.Event()
        self.on_line: Callable[[str], None] | None = None

    def write(self, s: str) -> int:
        for line in s.splitlines():
            if line.strip():
                self.lines.append(line)
                if self.on_line is not None:
                    self.on_line(line)
        if self.until(self.lines):
            self.stop.set()
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


def schedule(pair: Pair, jobs: list[object], watch: Watch, timeout: float = 60) -> None:
    async def main() -> None:
        watch.stop = asyncio.Event()
        rep = Reporter(watch, tty=False, interval=3600)  # type: ignore[arg-type]
        await asyncio.wait_for(
            run_scheduler(
                jobs,
                pair.target,
                pair.source,
                reporter=rep,
                stop=watch.stop,  # type: ignore[arg-type]
                base_delay=0.05,
            ),
            timeout,
        )

    asyncio.run(main())


def items(pair: Pair, rows: int) -> str:
    name = unique("items")
    x(pair.source, f"CREATE TABLE {name} (id int PRIMARY KEY, label text);"
                   f" INSERT INTO {name} SELECT g, 'item ' || g FROM generate_series(1, {rows}) g")  # fmt: skip
    return name


def test_missed_is_true_only_when_a_slot_passed_after_the_last_run() -> None:
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    daily = "0 3 * * *"
    assert missed(daily, now - timedelta(days=2), now)
    assert not missed(daily, now.replace(hour=3, minute=0, second=5), now)
    assert not missed(daily, None, now)  # never ran: wait for the first slot


def test_a_slot_missed_while_down_runs_once_at_start_up(pair: Pair) -> None:
    src = items(pair, 10)
    job = pair.job(name=src, query=f"select id, label from {src}", target=f"public.{src}",
                   key=["id"], schedule="0 3 * * *")  # fmt: skip

    async def seed() -> None:
        import asyncpg

        conn = await asyncpg.connect(pair.target)
        try:
            await schema.migrate(conn)
        finally:
            await conn.close()
        await execute(pair.target, "INSERT INTO r2sf.sync_runs (job, started_at, finished_at,"
                      " status) VALUES ($1, now() - interval '3 days', now() - interval '3 days',"
                      " 'ok')", src)  # fmt: skip

    asyncio.run(seed())
    watch = Watch(lambda lines: any("event=done" in ln or "event=failed" in ln for ln in lines))
    schedule(pair, [job], watch)
    assert watch.count(f"event=catching_up job={src}") == 1
    runs = q(pair.target, "SELECT status FROM r2sf.sync_runs WHERE job = $1 ORDER BY id", src)
    assert [r[0] for r in runs] == ["ok", "ok"]
    assert q(pair.target, f"SELECT count(*) FROM {src}")[0][0] == 10
    # Started again (a second dyno restart): the slot is made up already, nothing runs.
    again = Watch(lambda lines: any("event=scheduler_started" in ln for ln in lines))
    schedule(pair, [job], again)
    assert again.count("event=catching_up") == 0 and again.count("event=start") == 0
    assert q(pair.target, "SELECT count(*) FROM r2sf.sync_runs WHERE job = $1", src)[0][0] == 2


def test_a_job_never_overlaps_itself(pair: Pair) -> None:
    src = items(pair, 20)
    job = pair.job(name=src, query=f"select id, label from {src} where stall_at(id, 10)",
                   target=f"public.{src}", key=["id"], schedule="* * * * * *")  # fmt: skip
    x(pair.source, "UPDATE ctl SET pause = true")
    watch = Watch(lambda lines: any("event=done" in ln for ln in lines))

    def unpause() -> None:
        x(pair.source, "UPDATE ctl SET pause = false")
        q(pair.source, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                       " WHERE wait_event = 'PgSleep' AND datname = current_database()")  # fmt: skip

    def unpause_after_two_skips(line: str) -> None:
        # Called inside the scheduler's event loop: the database work goes to a thread.
        if "event=skipped" in line and watch.count("event=skipped") == 2:
            threading.Thread(target=unpause, daemon=True).start()

    watch.on_line = unpause_after_two_skips
    try:
        schedule(pair, [job], watch)
    finally:
        x(pair.source, "UPDATE ctl SET pause = false")
    first_done = next(i for i, ln in enumerate(watch.lines) if "event=done" in ln or
                      "event=failed" in ln)  # fmt: skip
    before = watch.lines[:first_done]
    assert sum(f"event=start job={src}" in ln for ln in before) <= 2, watch.lines
    assert watch.count(f"event=skipped job={src}") >= 2
    assert watch.count(f"code={LockHeld.code}") == 0  # never started while running


def test_a_run_over_its_timeout_is_stopped_and_the_scheduler_goes_on(pair: Pair) -> None:
    slow = items(pair, 20)
    fast = items(pair, 5)
    jobs = [
        pair.job(name=slow, query=f"select id, label from {slow} where stall_at(id, 10)",
                 target=f"public.{slow}", key=["id"], schedule="* * * * * *", timeout=1),
        pair.job(name=fast, query=f"select id, label from {fast}", target=f"public.{fast}",
                 key=["id"], schedule="* * * * * *"),
    ]  # fmt: skip
    x(pair.source, "UPDATE ctl SET pause = true")
    failed = f"event=failed job={slow} code={JobTimeout.code}"
    watch = Watch(lambda lines: any(failed in ln for ln in lines)
                  and any(f"event=done job={fast}" in ln for ln in lines))  # fmt: skip
    try:
        schedule(pair, jobs, watch)
    finally:
        x(pair.source, "UPDATE ctl SET pause = false")
        q(pair.source, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE wait_event = 'PgSleep' AND datname = current_database()")  # fmt: skip
    rows = q(pair.target, "SELECT status, error FROM r2sf.sync_runs WHERE job = $1", slow)
    assert rows and rows[0][0] == "failed" and "the job's timeout" in rows[0][1]
    assert q(pair.target, "SELECT to_regclass($1)", f"public.{slow}")[0][0] is None
