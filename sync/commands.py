"""Sync sub-commands of the `r2sf` CLI: `sync`, `scheduler` and `discover`.

Each handler returns the process exit code: 0 ok, 1 a run failed, 2 a configuration error
(raised as `ConfigError`, printed by service/cli.py), 3 another run holds a job's lock. Failures
are printed as one line; no traceback, SQL or password reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg

from sync.config import (
    Job,
    SyncSettings,
    alert_webhook,
    load_jobs,
    load_sync_settings,
    parse_sync_file,
    select_jobs,
    source_url,
)
from sync.errors import LockHeld, SyncError
from sync.progress import Reporter

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LOCKED = LockHeld.exit_code


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = commands.add_parser("sync", help="copy the warehouse into the target tables now")
    sync.add_argument("jobs", nargs="*", metavar="JOB", help="job names (default: all)")
    sync.add_argument(
        "--full-refresh", action="store_true", help="ignore watermarks; apply deletes"
    )
    sync.add_argument(
        "--dry-run", action="store_true", help="report what would change; write nothing"
    )
    sync.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="rows whose values do not fit the target: fail the run or skip them",
    )
    sync.add_argument(
        "--force",
        action="store_true",
        help="write even when a job would change more rows than its max_changes",
    )
    sync.add_argument(
        "--adopt",
        action="store_true",
        help="Heroku Connect jobs: take over existing rows whose external ID the warehouse"
        " returns (after renaming a job or moving from another loader)",
    )
    sync.add_argument("--retries", type=int, default=2,
                      help="retries of a dropped or refused connection (backoff doubles)")  # fmt: skip
    sync.add_argument("--retry-delay", type=float, default=2.0, help="first retry delay, seconds")
    sync.set_defaults(handler=sync_command)

    sched = commands.add_parser("scheduler", help="clock process: run jobs on their schedules")
    sched.add_argument("--max-retries", type=int, default=5, help="retries of a transient failure")
    sched.add_argument(
        "--retry-delay", type=float, default=1.0, help="first retry delay in seconds (doubles)"
    )
    sched.set_defaults(handler=scheduler_command)

    disc = commands.add_parser("discover", help="print [[sync.jobs]] TOML for warehouse tables")
    disc.add_argument("--source", help="warehouse URL (default: $REDSHIFT_URL or [source] url)")
    disc.add_argument("--schema", default="public")
    disc.add_argument("--tables", nargs="*", default=[], metavar="T")
    disc.add_argument("--heroku-connect", action="store_true",
                      help="match tables to salesforce.* in DATABASE_URL")  # fmt: skip
    disc.set_defaults(handler=discover_command)


def _jobs(args: argparse.Namespace) -> tuple[SyncSettings, list[Job], str]:
    # Only the sync's own settings: a bad [odata] section or ODATA_CREDENTIALS is not its concern.
    settings = load_sync_settings(getattr(args, "config", None))
    where = settings.where
    jobs = load_jobs(settings.file, where)
    url = source_url(settings.file, where)
    args.alert_webhook = alert_webhook(settings.file, where)
    try:
        stored = asyncio.run(stored_jobs(settings.database_url, settings.file, -1))
    except (OSError, TimeoutError, asyncpg.PostgresError):
        stored = None  # the run itself reports the unreachable target
    args.config_version = 0
    if stored is not None:
        args.config_version, jobs = stored
    return settings, jobs, url


async def stored_jobs(target_url: str, file: Any, known: int) -> tuple[int, list[Job]] | None:
    """(version, jobs) of the configuration stored in the target, when its version is not
    `known`; None when it is, or when nothing is stored (the file's jobs then run)."""
    from sync import stored_config

    conn = await asyncpg.connect(target_url, timeout=30, statement_cache_size=0)  # PgBouncer-safe
    try:
        if await stored_config.latest_id(conn) == known:
            return None
        version, section = await stored_config.stored_sync_section(conn)
    finally:
        await conn.close()
    if section is None:
        return None
    # The stored [sync] replaces the file's, except the webhook (a secret: config vars only).
    secrets = {"alert_webhook": file.sync.alert_webhook} if file.sync.alert_webhook else {}
    where = f"stored configuration (version {version})"
    return version, load_jobs(parse_sync_file({"sync": {**secrets, **section}}, where), where)


def sync_command(args: argparse.Namespace) -> int:
    settings, jobs, url = _jobs(args)
    where = settings.where
    chosen = select_jobs(jobs, args.jobs, where)
    if not chosen:
        print(f"r2sf sync: no jobs configured in {where} ([[sync.jobs]])", file=sys.stderr)
        return EXIT_FAILED
    options = {
        "full_refresh": args.full_refresh,
        "dry_run": args.dry_run,
        "on_error": args.on_error,
        "force": args.force,
        "adopt": args.adopt,
        "alert_webhook": args.alert_webhook,
    }
    retry = (max(args.retries, 0), args.retry_delay)
    return asyncio.run(_sync_all(chosen, settings.database_url, url, options, retry))


async def _sync_all(
    jobs: list[Job],
    target: str,
    source: str,
    options: dict[str, Any],
    retry: tuple[int, float] = (0, 1.0),
) -> int:
    from sync.engine import run_job
    from sync.schedule import run_with_retries

    rep = Reporter()
    codes = []
    dry = options["dry_run"]
    for job in jobs:
        try:
            if dry:
                result = await run_job(
                    job, target_url=target, source_url=source, reporter=rep, **options
                )
            else:
                result = await run_with_retries(job, target, source, rep, max_retries=retry[0],
                                                base_delay=retry[1], **options)  # fmt: skip
        except SyncError as exc:
            print(f"r2sf sync: {exc}", file=sys.stderr)
            codes.append(exc.exit_code)
            continue
        codes.append(EXIT_OK)
        if dry:
            _print_dry_run(result)
        for reason in result.skipped_reasons:
            print(f"r2sf sync: job '{job.name}': skipped {reason}", file=sys.stderr)
        if result.not_owned:
            print(
                f"r2sf sync: job '{job.name}': left {result.not_owned} row(s) alone whose"
                f" external ID belongs to a {result.target} record this job did not write"
                " (created in Salesforce or typed by hand), e.g. "
                + "; ".join(result.samples.get("not_owned", []))
                + ". To take them over: r2sf sync --adopt "
                + job.name,
                file=sys.stderr,
            )
    if EXIT_FAILED in codes:
        return EXIT_FAILED
    return max(codes, default=EXIT_OK)


def _print_dry_run(result: Any) -> None:
    print(
        f"{result.job}: would insert {result.inserted}, update {result.updated},"
        f" delete {result.deleted}, leave {result.unchanged} unchanged"
        f" (read {result.rows_read}, skip {result.skipped}) in {result.target}"
    )
    for kind, keys in result.samples.items():
        if keys and kind != "not_owned":
            print(f"  {kind}: {'; '.join(keys)}")
    hc = result.heroku_connect
    if result.not_owned:
        keys = "; ".join(result.samples.get("not_owned", []))
        print(f"  not owned (left alone): {result.not_owned}, e.g. {keys}")
    if hc.get("push"):
        print(f"  Heroku Connect would push {result.written} rows to Salesforce: {hc['push']}")
    budget = result.change_budget
    if budget is not None and result.written > budget:
        print(f"  more than max_changes = {budget}: a run stops before writing (--force)")


def scheduler_command(args: argparse.Namespace) -> int:
    import os

    from sync.schedule import run_scheduler
    from sync.settings import ConfigError

    settings, jobs, url = _jobs(args)
    rep = Reporter()
    known = args.config_version
    # With the console on (or a stored configuration), jobs can arrive later: wait for them.
    # Otherwise a scheduler with nothing to schedule is a mistake in r2sf.toml.
    waits = bool(os.environ.get("ADMIN_CREDENTIALS")) or known > 0

    async def refresh() -> list[Job] | None:
        nonlocal known
        try:
            stored = await stored_jobs(settings.database_url, settings.file, known)
        except ConfigError as exc:
            rep.log("warning", error=f"stored configuration not applied: {exc}")
            return None
        except Exception as exc:
            rep.log("warning", error=f"cannot read the stored configuration: {type(exc).__name__}")
            return None
        if stored is None:
            return None
        known, new_jobs = stored
        return new_jobs

    return asyncio.run(
        run_scheduler(
            jobs,
            settings.database_url,
            url,
            max_retries=args.max_retries,
            base_delay=args.retry_delay,
            alert_webhook=args.alert_webhook,
            reporter=rep,
            refresh=refresh if waits or any(j.schedule for j in jobs) else None,
        )
    )


def discover_command(args: argparse.Namespace) -> int:
    import os

    from sync.discover import discover
    from sync.settings import ConfigError

    url = args.source
    if not url:
        from sync.settings import read_config

        _, where, raw = read_config(getattr(args, "config", None))
        url = source_url(parse_sync_file(raw, where), where)
    target = os.environ.get("DATABASE_URL") if args.heroku_connect else None
    if args.heroku_connect and not target:
        raise ConfigError(
            "DATABASE_URL",
            "not set; --heroku-connect reads salesforce.* tables from the target",
            "export DATABASE_URL=postgresql://user:password@host:5432/dbname",
        )
    try:
        text = asyncio.run(discover(url, args.schema, args.tables, target))
    except SyncError as exc:
        print(f"r2sf discover: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(text)
    return EXIT_OK
