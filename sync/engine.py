"""One sync run end to end: lock, extract, stage, check, merge, record, report.

`run_job` is the Python entry point (the CLI, the scheduler and the demo call it). Everything a
run writes (target rows, the run record, the watermark) commits in one transaction; any failure
rolls it back and is recorded separately. It never logs a password. Readers learn of changes
from the OData service's own triggers (odata/versions.py), not from anything sent here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from croniter import croniter

from odata import versions as odata_versions
from odata.ident import ident
from sync import alerts, fingerprint, heroku_connect, load, schema, state
from sync.config import Job
from sync.errors import (
    ExtractError,
    JobTimeout,
    LockHeld,
    SourceError,
    SyncError,
    TargetError,
    TransientError,
)
from sync.progress import Reporter
from sync.settings import redact_url
from sync.source import Limits, Source, SourceColumn, is_redshift, open_source, window

WORK_MEM = "64MB"
TEMP_BUFFERS = "256MB"


@dataclass
class RunResult:
    job: str
    target: str
    dry_run: bool
    full_refresh: bool
    rows_read: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    skipped: int
    target_rows: int
    seconds: float
    not_owned: int = 0  # Heroku Connect: warehouse rows whose record the job does not own
    adopted: int = 0  # Heroku Connect: existing rows this run took ownership of
    change_budget: int | None = None  # the job's max_changes in effect
    run_id: int | None = None
    samples: dict[str, list[str]] = field(default_factory=dict)
    skipped_reasons: list[str] = field(default_factory=list)
    heroku_connect: dict[str, Any] = field(default_factory=dict)
    watermark: str | None = None
    transition: bool = False  # the job's previous recorded run had failed: it recovered
    # "fingerprints" when the rerun compared bucket summaries and staged only differing
    # buckets (`staged` rows), "full" when every row was read.
    compared: str = "full"
    staged: int = 0
    target_summary: str = ""  # fingerprints: "kept" (from the last run) or "computed"

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "target": self.target,
            "status": "dry_run" if self.dry_run else "ok",
            "read": self.rows_read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "target_rows": self.target_rows,
            "seconds": round(self.seconds, 3),
            "compared": self.compared,
        }
        if self.not_owned or self.adopted:
            out["not_owned"] = self.not_owned
            out["adopted"] = self.adopted
        if self.watermark is not None:
            out["watermark"] = self.watermark
        for k, v in self.heroku_connect.items():
            out["hc_" + k] = v
        return out


_TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
)


# The target lost its connection or is restarting: the run rolled back; worth retrying.
_TARGET_GONE = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.CrashShutdownError,
)
# Out of space while staging or merging: a real full disk (53100) or temp_file_limit (53400).
_NO_SPACE = (asyncpg.DiskFullError, asyncpg.ConfigurationLimitExceededError)


def _classify(job: str, exc: BaseException, source_url: str, target_url: str) -> SyncError:
    """Wrap a driver exception in the sync hierarchy, with any URL redacted."""
    text = (
        str(exc)
        .replace(source_url, redact_url(source_url))
        .replace(target_url, redact_url(target_url))
    )
    text = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, ExtractError):
        if exc.transient:
            return TransientError(job, f"the warehouse connection failed or dropped: {text}")
        return SourceError(job, f"{exc.type_name}: {text}")
    if isinstance(exc, _TARGET_GONE):
        return TransientError(
            job, f"the target database closed the connection (restarted?): {text}; nothing was"
            " written"
        )  # fmt: skip
    if isinstance(exc, _NO_SPACE):
        return TargetError(
            job,
            f"the target database ran out of space for the run's temporary data ({text});"
            " nothing was written. Free disk space or raise temp_file_limit, or make the job"
            " incremental so each run stages fewer rows",
        )
    if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
        return TransientError(
            job, f"the target database cancelled the run to break a conflict with another"
            f" session writing the same rows (an OData write, Heroku Connect): {text}; nothing"
            " was written"
        )  # fmt: skip
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return TargetError(
            job, f"waited longer than lock_timeout for a lock on the target ({text}); another"
            " session holds the table (an ALTER TABLE, a long transaction). Nothing was written"
        )  # fmt: skip
    if isinstance(exc, _TRANSIENT) or type(exc).__name__ in ("InterfaceError", "OperationalError"):
        return TransientError(job, f"connection failed: {text}")
    if isinstance(exc, asyncpg.PostgresError):
        return TargetError(job, f"{type(exc).__name__}: {text}")
    return SourceError(job, f"{type(exc).__name__}: {text}")


def session_settings(job: Job) -> dict[str, str]:
    """The startup parameters of a run's target session: only those PgBouncer forwards, so the
    same run works through `DATABASE_CONNECTION_POOL_URL`. UTC whatever the server's default
    (timestamptz to timestamp conversions and watermarks must not depend on it)."""
    return {"application_name": f"r2sf sync {job.name}"[:63], "TimeZone": "UTC"}


def transaction_settings(job: Job) -> dict[str, str]:
    """Set with SET LOCAL at the start of the run's transaction: they hold for that transaction
    only, so nothing is left on a pooled server connection."""
    return {
        "lock_timeout": f"{job.lock_timeout}s",
        # The whole run is bounded by the job's timeout; no statement can outlast it.
        "statement_timeout": f"{job.timeout}s",
        "idle_in_transaction_session_timeout": f"{job.timeout}s",
        # The staging joins and the duplicate-key check hash every staged key; with the default
        # 4 MB they spill to disk from about 100k rows on.
        "work_mem": WORK_MEM,
        # Floats as text with every digit (fingerprints compare some values' text).
        "extra_float_digits": "3",
    }


# Tried one by one in a savepoint: the server may refuse them (an older PostgreSQL, or, for
# temp_buffers, a pooled server connection whose session already used temporary tables).
OPTIONAL_SETTINGS = {
    # If this process dies mid-merge, the server notices within seconds (PostgreSQL 14+),
    # rolls the transaction back and frees the job lock for the next run.
    "client_connection_check_interval": "2s",
    # Staging lives in temp buffers (no WAL); with the default 8 MB a big load spills.
    "temp_buffers": TEMP_BUFFERS,
}


async def run_job(
    job: Job,
    *,
    target_url: str,
    source_url: str,
    full_refresh: bool = False,
    dry_run: bool = False,
    on_error: str = "fail",
    reporter: Reporter | None = None,
    force: bool = False,
    adopt: bool = False,
    alert_webhook: str | None = None,
) -> RunResult:
    """Run one job; raises a `SyncError` (nothing written) when it cannot complete.

    `force` lets a run write more rows than the job's `max_changes`; `adopt` makes a Heroku
    Connect job take ownership of existing rows whose external ID the warehouse returns. A run
    still going after the job's `timeout` is stopped (`JobTimeout`). Every outcome but a held
    lock is recorded in r2sf.sync_runs; `alert_webhook` is called when the job starts failing
    and when it recovers.
    """
    rep = reporter or Reporter()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    rep.log("start", job=job.name, source=redact_url(source_url), target=job.target,
            full_refresh=full_refresh, dry_run=dry_run)  # fmt: skip
    conn: Any = None
    opts = _Options(full_refresh, dry_run, on_error, force, adopt)
    deadline = asyncio.timeout(job.timeout)
    try:
        async with deadline:
            try:
                # No named prepared statements: a pooler in transaction mode may run each
                # transaction on another server connection.
                conn = await asyncpg.connect(
                    target_url,
                    server_settings=session_settings(job),
                    timeout=60,
                    statement_cache_size=0,
                )
            except Exception as exc:
                raise _classify(job.name, exc, source_url, target_url) from None
            result = await _run_connected(conn, job, source_url, target_url, opts, rep)
        result.seconds = time.monotonic() - t0
        rep.log("done", **result.summary())
        if result.transition and alert_webhook:
            await alerts.send(alert_webhook, alerts.recovered(job.name, result.run_id), rep)
        return result
    except SyncError as exc:
        err = exc
    except TimeoutError as exc:
        err = (
            JobTimeout(
                job.name,
                f"stopped after {job.timeout} s, the job's timeout; the run was rolled back and"
                " nothing was written. Raise timeout (seconds) for this job if it needs longer,"
                " or make it incremental",
            )
            if deadline.expired()
            else _classify(job.name, exc, source_url, target_url)
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        err = _classify(job.name, exc, source_url, target_url)
    finally:
        # Closing the connection rolls back any open transaction and frees the lock.
        if conn is not None and not conn.is_closed():
            conn.terminate() if conn.is_in_transaction() else await conn.close()
    first = False
    if not dry_run and not isinstance(err, LockHeld):
        first = await _record_failure(target_url, job.name, started, full_refresh, err, rep)
    rep.log("failed", job=job.name, code=err.code, error=err.message)
    if first and alert_webhook:
        await alerts.send(alert_webhook, alerts.failed(job.name, err.code, err.message), rep)
    raise err


async def _record_failure(
    target_url: str, job: str, started: datetime, full_refresh: bool, err: SyncError, rep: Reporter
) -> bool:
    """Record the failed run, waiting a little for a target that is restarting; True when it
    is the job's first failure since it last succeeded."""
    for delay in (0.5, 1.0, 2.0, 4.0, 8.0, None):
        try:
            return await state.record_failure(target_url, job, started, full_refresh, err.message)
        except Exception as exc:  # the failure itself is what the caller needs to see
            if delay is None or not isinstance(exc, OSError | asyncpg.PostgresConnectionError
                                               | asyncpg.CannotConnectNowError):  # fmt: skip
                rep.log("warning", job=job, error=f"could not record the failed run: {exc}")
                return True
            await asyncio.sleep(delay)
    return True


async def _run_connected(
    conn: Any, job: Job, source_url: str, target_url: str, opts: _Options, rep: Reporter
) -> RunResult:
    try:
        return await _run_locked(conn, job, source_url, target_url, opts, rep)
    except SyncError:
        raise
    except (asyncio.CancelledError, TimeoutError):
        raise
    except Exception as exc:
        raise _classify(job.name, exc, source_url, target_url) from None


@dataclass(frozen=True)
class _Options:
    full_refresh: bool
    dry_run: bool
    on_error: str
    force: bool
    adopt: bool


async def _run_locked(
    conn: Any, job: Job, source_url: str, target_url: str, opts: _Options, rep: Reporter
) -> RunResult:
    started = datetime.now(UTC)
    dry_run = opts.dry_run
    if not dry_run:
        await schema.migrate(conn)
    # One transaction from here on: the job lock, a new target, its rows, the run record and
    # the watermark commit together, and any failure leaves the target as it was. The lock is
    # transaction-scoped: it ends with the transaction, whatever connection (or pooled server
    # connection) it ran on.
    tx = conn.transaction()
    await tx.start()
    try:
        holder = await state.try_lock(conn, job.name)
        if holder is not None:
            raise LockHeld(
                job.name,
                f"another run holds its lock ({holder}); wait for it to finish, or stop that"
                " process",
            )
        await _set_local(conn, job)
        return await _run_in_transaction(conn, tx, job, source_url, opts, rep, started)
    except BaseException:
        # Bounded: a connection that no longer answers is terminated by run_job instead.
        if conn.is_in_transaction():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tx.rollback(), 10)
        raise


async def _set_local(conn: Any, job: Job) -> None:
    for name, value in transaction_settings(job).items():
        await conn.execute("SELECT set_config($1, $2, true)", name, value)
    for name, value in OPTIONAL_SETTINGS.items():
        with contextlib.suppress(asyncpg.PostgresError):
            async with conn.transaction():  # a savepoint
                await conn.execute("SELECT set_config($1, $2, true)", name, value)


async def _run_in_transaction(
    conn: Any,
    tx: Any,
    job: Job,
    source_url: str,
    opts: _Options,
    rep: Reporter,
    started: datetime,
) -> RunResult:
    full_refresh, dry_run = opts.full_refresh, opts.dry_run
    watermark = None
    if job.incremental is not None and not full_refresh:
        if await _full_refresh_due(conn, job, started):
            rep.log("full_refresh_due", job=job.name, schedule=job.full_refresh)
            full_refresh = True
        else:
            watermark = await state.get_watermark(conn, job.name)
            if watermark is not None and watermark.column != job.incremental.column:
                watermark = None  # the job changed its column: read everything once
    deletes = job.deletes != "ignore" and (watermark is None or full_refresh)
    # Recorded as full when it read everything, so the full_refresh schedule counts it.
    read_all = full_refresh or (job.incremental is not None and watermark is None)
    limits = Limits(statement_timeout=job.timeout)
    counts = load.Counts()

    def progress(rows: int, nbytes: int) -> None:
        rep.progress(job.name, rows, nbytes)

    def new_source(describe_only: bool = False) -> Source:
        return open_source(
            source_url,
            job.source_sql,
            window(watermark, job.incremental),
            job.fetch_size,
            job.table,
            limits,
            describe_only=describe_only,
        )

    # A rerun of a full job with a big enough target first compares fingerprints: the source
    # then only describes its columns here (a Redshift cursor would run the whole query).
    estimate = (
        None if watermark is not None else await fingerprint.candidate(conn, job, full_refresh)
    )
    source = new_source(describe_only=estimate is not None)
    compared: fingerprint.Comparison | None = None
    try:
        try:
            await source.open()
        except (ValueError, SyncError) as exc:
            raise SourceError(job.name, str(exc)) from None
        types = await load.staging_types(conn, source.columns)
        target, created = await _target(conn, job, source.columns, types)
        plan = load.plan(job, source.columns, types, target)
        loaded = False
        if estimate is not None:
            compared = await _compare_fingerprints(
                conn, job, plan, source, types, estimate, source_url, limits, rep, progress
            )
            if compared is None and source.describe_only:
                await source.close()
                source = new_source()
                await source.open()
        if compared is not None:
            pass
        elif not dry_run and await load.can_load_directly(conn, plan, source, created):
            try:
                async with conn.transaction():  # a savepoint
                    counts.read = await load.copy_into_target(conn, source, plan, progress, created)
                loaded = True
            except load.DIRECT_LOAD_ERRORS as exc:
                # Something does not fit; the staging path names the row and column.
                rep.log("direct_load_failed", job=job.name, error=str(exc).splitlines()[0])
                await source.close()
                source = new_source()
                await source.open()
        if not loaded and compared is None:
            keys = [p.source for p in plan.keys]
            counts.read = await load.stage(conn, source, types, keys, progress)
    finally:
        await source.close()
    if compared is not None:
        counts.read = compared.source_rows
        counts.target_rows = compared.target_rows
        counts.restricted_target_rows = compared.changed_target_rows
        counts.staged_rows = compared.staged
        plan.restrict = compared.fp.restrict(compared.changed, "t")
        nbytes = compared.source_bytes
    else:
        nbytes = source.nbytes
    counts.source_rows = counts.read
    staged = {"staged": compared.staged} if compared is not None else {}
    rep.log("staged" if not loaded else "loaded", job=job.name, rows=counts.read,
            bytes=nbytes, **staged)  # fmt: skip
    keeps = job.compare != "full" and fingerprint.may_keep(job, plan)
    if loaded and created and keeps:
        # No one else can have written to a table this transaction created: from here on the
        # data-version triggers see every write, so reruns may keep fingerprint summaries.
        oid = await conn.fetchval("SELECT $1::regclass::oid", plan.target.sql)
        await odata_versions.install_triggers(conn, target.schema, target.table, oid)
    result = await _merge(
        conn, job, plan, counts, opts, deletes, started, loaded, read_all, compared
    )
    if compared is not None:
        result.compared, result.staged = "fingerprints", compared.staged
        result.target_summary = "kept" if compared.kept else "computed"
    # A dry run rolls back too: it may have created the target to plan against it.
    await (tx.rollback() if dry_run else tx.commit())
    if job.heroku_connect is not None:
        result.heroku_connect = await heroku_connect.report(
            conn, target.schema, target.table, job.heroku_connect.external_id
        )
        if result.written:
            result.heroku_connect["push"] = heroku_connect.push_estimate(result.written)
    return result


# Errors that end the run even during a fingerprint comparison (anything else there only
# means comparing every row instead).
_FATAL = (*_TARGET_GONE, *_NO_SPACE, asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError)


async def _compare_fingerprints(
    conn: Any,
    job: Job,
    plan: load.Plan,
    described: Source,
    types: dict[str, str],
    estimate: float,
    source_url: str,
    limits: Limits,
    rep: Reporter,
    progress: load.Progress,
) -> fingerprint.Comparison | None:
    """Compare both sides' bucket summaries and stage the source rows of the buckets that
    differ (sync/fingerprint.py); None when this run must compare every row instead."""
    dialect: fingerprint.Dialect = "redshift" if is_redshift(source_url) else "postgres"
    reason = fingerprint.why_not(plan, dialect, described.columns)
    if reason is not None:
        rep.log("compare", job=job.name, method="full", reason=reason)
        return None
    t0 = time.monotonic()
    try:
        async with conn.transaction():  # a savepoint: a fallback leaves no temporary table
            fp = await fingerprint.layout(conn, dialect, plan, described.columns, estimate)
            relid: int = await conn.fetchval("SELECT $1::regclass::oid", plan.target.sql)
            version = await fingerprint.target_version(conn, relid)
            kept = fingerprint.may_keep(job, plan) and await fingerprint.use_kept(
                conn, job.name, fp, relid, version
            )
            # A PostgreSQL source reads the summary and the differing rows in one snapshot, so
            # the summary the run keeps is exactly what it wrote (others: `fingerprint.keep`).
            shared = dialect == "postgres"
            split = shared and kept and fingerprint.SPLIT_WHEN_KEPT
            # The source groups about ROWS_PER_BUCKET rows into each bucket: with the server's
            # default work_mem (4 MB) the hash table spills to disk and the summary takes twice
            # as long.
            summary_settings = {"work_mem": WORK_MEM}
            if split:  # two queries already: no parallel workers on top (SPLIT_WHEN_KEPT)
                summary_settings["max_parallel_workers_per_gather"] = "0"
            summary = open_source(source_url,
                                  fp.source_summary_sql(job.source_sql, 0 if split else None),
                                  None, job.fetch_size, None, limits, export=shared,
                                  settings=summary_settings)  # fmt: skip
            async with contextlib.AsyncExitStack() as open_sources:
                open_sources.push_async_callback(summary.close)
                summaries = [summary]
                if split:
                    await summary.open()  # its snapshot, for the other half to read in
                    snapshot = getattr(summary, "snapshot", None)
                    assert snapshot is not None  # a PostgreSQL source that exported one
                    other = open_source(source_url, fp.source_summary_sql(job.source_sql, 1),
                                        None, job.fetch_size, None, limits, snapshot=snapshot,
                                        settings=summary_settings)  # fmt: skip
                    open_sources.push_async_callback(other.close)
                    summaries.append(other)
                cmp = await fingerprint.compare(conn, fp, summaries, kept)
                for done in summaries[1:]:  # its connection is not needed while staging
                    await done.close()
                cmp.kept, cmp.relid, cmp.version = kept, relid, version
                cmp.consistent = shared
                rep.log("compared", job=job.name, method="fingerprints", buckets=fp.description,
                        target_summary="kept" if kept else "computed",
                        differing=cmp.differing, rows=cmp.source_rows,
                        rows_to_read=cmp.changed_source_rows, bytes=cmp.source_bytes,
                        seconds=round(time.monotonic() - t0, 3))  # fmt: skip
                return await _stage_differing(
                    conn,
                    job,
                    plan,
                    types,
                    cmp,
                    summary,
                    source_url,
                    limits,
                    progress,
                    open_sources,
                )
    except fingerprint.Unusable as exc:
        why = str(exc)
    except (asyncpg.PostgresError, ExtractError) as exc:
        if isinstance(exc, _FATAL) or (isinstance(exc, ExtractError) and exc.transient):
            raise
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    rep.log("compare", job=job.name, method="full", reason=why)
    return None


async def _stage_differing(
    conn: Any,
    job: Job,
    plan: load.Plan,
    types: dict[str, str],
    cmp: fingerprint.Comparison,
    summary: Source,
    source_url: str,
    limits: Limits,
    progress: load.Progress,
    open_sources: contextlib.AsyncExitStack,
) -> fingerprint.Comparison:
    """Stage the source rows of the buckets `cmp` found different, in the summary's snapshot
    when it shared one (raises Unusable when reading every row would cost less)."""
    if cmp.share > fingerprint.MAX_SHARE:
        raise fingerprint.Unusable(
            f"{cmp.share:.0%} of the rows lie in differing buckets; reading them all"
        )
    if not cmp.differing:
        await load.create_staging(conn, cmp.fp.columns, types)
        return cmp
    sql = cmp.fp.filtered_sql(job.source_sql, cmp.changed)
    snapshot = getattr(summary, "snapshot", None)
    extract = open_source(
        source_url, sql, None, job.fetch_size, job.table, limits, snapshot=snapshot
    )
    open_sources.push_async_callback(extract.close)
    await extract.open()
    await summary.close()  # the snapshot is taken: its exporter may end
    cmp.staged = await load.stage(conn, extract, types, [p.source for p in plan.keys], progress)
    cmp.source_bytes += extract.nbytes
    await fingerprint.verify_staged(conn, cmp, load.STAGING)
    return cmp


async def _target(
    conn: Any, job: Job, columns: list[SourceColumn], types: dict[str, str]
) -> tuple[load.Target, bool]:
    """The job's target table, created when missing (and allowed); True when just created."""
    target = await load.read_target(conn, job.target_schema, job.target_table)
    if target is not None:
        return target, False
    if job.heroku_connect is not None or not job.create:
        why = "Heroku Connect creates mapped tables" if job.heroku_connect else "create = false"
        raise TargetError(job.name, f"target {job.target} does not exist ({why});"
                          " create it, or set create = true for a plain table")  # fmt: skip
    await load.create_target(conn, job, columns, types)
    target = await load.read_target(conn, job.target_schema, job.target_table)
    assert target is not None
    return target, True


async def _merge(
    conn: Any,
    job: Job,
    plan: load.Plan,
    counts: load.Counts,
    opts: _Options,
    deletes: bool,
    started: datetime,
    loaded: bool,
    read_all: bool = False,
    compared: fingerprint.Comparison | None = None,
) -> RunResult:
    """Check, count and write the staged rows (or account for rows loaded directly)."""
    full_refresh, dry_run = opts.full_refresh, opts.dry_run
    adopted = 0
    if loaded:
        counts.inserted = counts.target_rows = counts.read
    else:
        await load.check_values(conn, plan, opts.on_error, counts)
        if plan.external_id is not None:
            adopted = await heroku_connect.prepare(
                conn, job, plan.target.sql, load.STAGING, plan.key_join(), opts.adopt
            )
        n_deletes = await load.count_changes(conn, plan, deletes, counts, samples=dry_run)
        if deletes:
            load.guard_deletes(plan, n_deletes, counts.target_rows)
        if not (opts.force or dry_run):
            load.guard_changes(plan, counts)
    result = RunResult(
        job=job.name, target=job.target, dry_run=dry_run, full_refresh=full_refresh or read_all,
        rows_read=counts.read, inserted=0, updated=0, unchanged=0, deleted=0,
        skipped=counts.skipped, target_rows=0, seconds=0.0,
        skipped_reasons=counts.skipped_reasons, adopted=adopted,
        change_budget=job.change_budget,
    )  # fmt: skip
    if dry_run:
        _fill(result, counts)
        result.samples = counts.samples
        return result
    if not loaded:
        keeping = (
            compared is not None
            and fingerprint.may_keep(job, plan)
            and await fingerprint.hold_version(
                conn, compared, plan.target.schema, plan.target.table
            )
        )
        await load.merge(conn, plan, deletes, n_deletes, counts)
        if keeping:
            assert compared is not None
            await fingerprint.keep(conn, job.name, compared)
    _fill(result, counts)
    if job.incremental is not None:
        pair = next(p for p in plan.pairs if p.source == job.incremental.column)
        if loaded:  # the target was empty: everything in it came from this run
            expr = f"(SELECT max({ident(pair.target.name)}) FROM {plan.target.sql})"
        else:
            col = ident(pair.source)
            expr = f"(SELECT max({col}) FROM {load.STAGING})"
            if plan.has_skipped:
                # Hold the watermark at the oldest skipped row, so the next run reads it again
                # (`>=`) until it is fixed; rows after it merge as unchanged meanwhile.
                expr = f"least({expr}, (SELECT min({col}) FROM {load.SKIPPED}))"
        await state.set_watermark_from(conn, job.name, pair.source, expr, pair.staging_type)
        result.watermark = await conn.fetchval(
            "SELECT value FROM r2sf.watermarks WHERE job = $1", job.name
        )
    previous = await state.last_status(conn, job.name)
    result.run_id = await state.record_run(
        conn, job.name, started, "ok", read_all or full_refresh, counts.as_dict()
    )
    result.transition = previous is not None and previous != "ok"
    return result


async def _full_refresh_due(conn: Any, job: Job, now: datetime) -> bool:
    """True when the job's full_refresh schedule has passed a time since its last full run."""
    if job.full_refresh is None or not await state.schema_exists(conn):
        return False
    last = await state.last_full_run(conn, job.name)
    if last is None:
        return False  # never ran in full yet: the first run reads everything anyway
    slot: datetime = croniter(job.full_refresh, now).get_prev(datetime)
    return last < slot


def _fill(result: RunResult, counts: load.Counts) -> None:
    result.inserted = counts.inserted
    result.updated = counts.updated
    result.unchanged = counts.unchanged
    result.deleted = counts.deleted
    result.target_rows = counts.target_rows
    result.not_owned = counts.not_owned
    result.samples = counts.samples
