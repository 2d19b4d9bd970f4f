"""The clock process: run each job on its cron schedule (UTC) until SIGTERM.

Jobs run concurrently, each at most once at a time: a slot that comes while the job's previous
run is still going is skipped (and logged), never queued. A slot missed while the process was
down (Heroku restarts dynos daily) is made up once at start-up, from the run history in the
target. Transient failures (a dropped or refused connection) are retried with exponential
backoff; other failures are recorded and the job waits for its next slot. A run over its job's
`timeout` is stopped by the engine and recorded. On SIGTERM or SIGINT the running jobs are
cancelled, which closes their connections so their open transactions roll back; it never
leaves a half-written target, and it stops well within Heroku's 30 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from croniter import croniter

from sync import state
from sync.config import Job
from sync.errors import LockHeld, SyncError, TransientError
from sync.progress import Reporter
from sync.settings import ConfigError

if TYPE_CHECKING:
    from sync.engine import RunResult

MAX_BACKOFF = 60.0
STOP_GRACE = 20.0  # seconds the cancelled runs get to roll back before the process exits
REFRESH_SECONDS = 3.0  # how soon a job list saved in the console is scheduled


def next_run(schedule: str, after: datetime) -> datetime:
    nxt: datetime = croniter(schedule, after).get_next(datetime)
    return nxt


def previous_slot(schedule: str, now: datetime) -> datetime:
    prev: datetime = croniter(schedule, now).get_prev(datetime)
    return prev


def missed(schedule: str, last_run: datetime | None, now: datetime) -> bool:
    """True when a slot passed after the job's last recorded run (a run was missed).

    A job that never ran waits for its first slot: a new deployment does not start everything
    at once.
    """
    return last_run is not None and last_run < previous_slot(schedule, now)


async def _last_runs(target_url: str, rep: Reporter) -> dict[str, datetime]:
    try:
        conn = await asyncpg.connect(target_url, timeout=30, statement_cache_size=0)
    except Exception as exc:
        rep.log("warning", error=f"cannot read the run history, no catch-up: {exc}")
        return {}
    try:
        return await state.last_runs(conn)
    finally:
        await conn.close()


async def run_scheduler(
    jobs: list[Job],
    target_url: str,
    source_url: str,
    *,
    max_retries: int = 5,
    base_delay: float = 1.0,
    reporter: Reporter | None = None,
    stop: asyncio.Event | None = None,
    alert_webhook: str | None = None,
    refresh: Callable[[], Awaitable[list[Job] | None]] | None = None,
    refresh_seconds: float = REFRESH_SECONDS,
) -> int:
    """Run scheduled jobs until `stop` is set (SIGTERM/SIGINT set it); returns the exit code.

    `refresh`, called every `refresh_seconds`, returns a new job list when the configuration
    changed (None otherwise): new and changed schedules apply at once, running runs go on.
    """
    rep = reporter or Reporter()
    scheduled = [j for j in jobs if j.schedule]
    if not scheduled and refresh is None:
        raise ConfigError(
            "r2sf.toml: sync.jobs",
            "no job has a schedule",
            'add schedule = "*/15 * * * *" (cron, UTC) to the jobs the scheduler should run',
        )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    now = datetime.now(UTC)
    last = await _last_runs(target_url, rep)
    due: dict[str, datetime] = {}
    for j in scheduled:
        assert j.schedule is not None
        if missed(j.schedule, last.get(j.name), now):
            rep.log("catching_up", job=j.name, last_run=last[j.name].isoformat(),
                    missed=previous_slot(j.schedule, now).isoformat())  # fmt: skip
            due[j.name] = now
        else:
            due[j.name] = next_run(j.schedule, now)
    rep.log("scheduler_started", jobs=",".join(j.name for j in scheduled))
    running: dict[str, asyncio.Task[RunResult]] = {}
    stopping = asyncio.create_task(stop.wait())
    refreshed = datetime.now(UTC)
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            if refresh is not None and (now - refreshed).total_seconds() >= refresh_seconds:
                refreshed = now
                new = await refresh()
                if new is not None:
                    scheduled, due = _rescheduled(scheduled, due, new, now)
                    rep.log("jobs_reloaded", jobs=",".join(j.name for j in scheduled))
            for job in scheduled:
                if due[job.name] > now:
                    continue
                assert job.schedule is not None
                due[job.name] = next_run(job.schedule, now)
                if job.name in running:
                    rep.log("skipped", job=job.name, reason="its previous run is still going",
                            next=due[job.name].isoformat())  # fmt: skip
                    continue
                running[job.name] = asyncio.create_task(
                    run_with_retries(
                        job,
                        target_url,
                        source_url,
                        rep,
                        stop,
                        max_retries=max_retries,
                        base_delay=base_delay,
                        alert_webhook=alert_webhook,
                    )
                )
            soonest = min(due.values(), default=None)
            delay = (
                refresh_seconds
                if soonest is None
                else max(0.0, (soonest - datetime.now(UTC)).total_seconds())
            )
            if refresh is not None:
                delay = min(delay, refresh_seconds)
            waiters: set[asyncio.Future[Any]] = {stopping, *running.values()}
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for name, task in list(running.items()):
                if task.done():
                    del running[name]
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        task.result()
    finally:
        stopping.cancel()
        for name, task in running.items():
            rep.log("cancelling", job=name, reason="stop requested")
            task.cancel()
        if running:
            await asyncio.wait(running.values(), timeout=STOP_GRACE)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    rep.log("scheduler_stopped")
    return 0


def _rescheduled(
    old: list[Job], due: dict[str, datetime], jobs: list[Job], now: datetime
) -> tuple[list[Job], dict[str, datetime]]:
    """The scheduled jobs of a new job list, keeping the next slot of unchanged schedules."""
    before = {j.name: j.schedule for j in old}
    scheduled = [j for j in jobs if j.schedule]
    new_due = {}
    for j in scheduled:
        assert j.schedule is not None
        same = before.get(j.name) == j.schedule and j.name in due
        new_due[j.name] = due[j.name] if same else next_run(j.schedule, now)
    return scheduled, new_due


async def run_with_retries(
    job: Job,
    target_url: str,
    source_url: str,
    rep: Reporter,
    stop: asyncio.Event | None = None,
    *,
    max_retries: int,
    base_delay: float,
    alert_webhook: str | None = None,
    **options: Any,
) -> RunResult:
    """Run a job, retrying transient failures with exponential backoff; raises the last
    `SyncError` (already logged and recorded) when it does not succeed."""
    from sync.engine import run_job

    for attempt in range(max_retries + 1):
        try:
            return await run_job(job, target_url=target_url, source_url=source_url, reporter=rep,
                                 alert_webhook=alert_webhook, **options)  # fmt: skip
        except TransientError as exc:
            if attempt == max_retries:
                rep.log("giving_up", job=job.name, attempts=attempt + 1, error=exc.message)
                raise
            delay = min(MAX_BACKOFF, base_delay * 2**attempt)
            rep.log("retrying", job=job.name, attempt=attempt + 1, in_seconds=delay)
            if stop is None:
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                raise
        except LockHeld:
            raise  # logged; another process is running it
        except SyncError:
            raise  # logged and recorded; wait for the next slot
    raise AssertionError("unreachable")
