"""The clock process: run each job on its cron schedule (UTC) until SIGTERM.

Transient failures (a dropped or refused connection) are retried with exponential backoff;
other failures are logged and the job waits for its next slot. On SIGTERM or SIGINT the running
job is cancelled, which closes its connections so its open transaction rolls back; it must never
leave a half-written target, and it stops well within Heroku's 30 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime

from croniter import croniter

from service.config import ConfigError
from sync.config import Job
from sync.errors import LockHeld, SyncError, TransientError
from sync.progress import Reporter

MAX_BACKOFF = 60.0


def next_run(schedule: str, after: datetime) -> datetime:
    nxt: datetime = croniter(schedule, after).get_next(datetime)
    return nxt


async def run_scheduler(
    jobs: list[Job],
    target_url: str,
    source_url: str,
    *,
    max_retries: int = 5,
    base_delay: float = 1.0,
    reporter: Reporter | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run scheduled jobs until `stop` is set (SIGTERM/SIGINT set it); returns the exit code."""
    rep = reporter or Reporter()
    scheduled = [j for j in jobs if j.schedule]
    if not scheduled:
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
    due = {j.name: next_run(j.schedule or "", now) for j in scheduled}
    rep.log("scheduler_started", jobs=",".join(j.name for j in scheduled))
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            job = min(scheduled, key=lambda j: due[j.name])
            delay = (due[job.name] - datetime.now(UTC)).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopping), timeout=delay)
                continue
            task = asyncio.create_task(
                _run_with_retries(job, target_url, source_url, max_retries, base_delay, rep, stop)
            )
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                rep.log("cancelling", job=job.name, reason="stop requested")
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            due[job.name] = next_run(job.schedule or "", datetime.now(UTC))
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    rep.log("scheduler_stopped")
    return 0


async def _run_with_retries(
    job: Job,
    target_url: str,
    source_url: str,
    max_retries: int,
    base_delay: float,
    rep: Reporter,
    stop: asyncio.Event,
) -> None:
    from sync.engine import run_job

    for attempt in range(max_retries + 1):
        try:
            await run_job(job, target_url=target_url, source_url=source_url, reporter=rep)
            return
        except TransientError as exc:
            if attempt == max_retries:
                rep.log("giving_up", job=job.name, attempts=attempt + 1, error=exc.message)
                return
            delay = min(MAX_BACKOFF, base_delay * 2**attempt)
            rep.log("retrying", job=job.name, attempt=attempt + 1, in_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return
        except LockHeld:
            return  # already logged; another process is running it
        except SyncError:
            return  # logged and recorded; wait for the next slot
