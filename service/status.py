"""What the service and the sync have been doing: `r2sf status`, `r2sf migrate` and the page at `/`.

Reads `r2sf.sync_runs` (see sync/state.py), the configured jobs and the catalogue; renders plain
text for the terminal and one server-rendered HTML page with inline SVG charts (no scripts, no
front-end build). It only reads, except `migrate`, which applies sync/schema.py's migrations.
Everything shown is escaped; no URL with a password is ever rendered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import asyncpg

from odata.ident import ident
from service.admin.page import e, when
from service.config import Settings, load_settings
from service.http import service_root

if TYPE_CHECKING:
    from fastapi import APIRouter

    from odata.service import ODataService

EXACT_COUNT_BELOW = 100_000  # rows; above this the planner's estimate is shown instead
COUNT_TIMEOUT_MS = 2000
PAGE_DAYS = 7
PAGE_RUNS_PER_JOB = 200


class App(Protocol):
    """What the page reads of the running service (service/app.py's App), without importing it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def root(self) -> str: ...

    @property
    def pool(self) -> asyncpg.Pool | None: ...

    @property
    def odata(self) -> ODataService | None: ...


@dataclass(frozen=True)
class Run:
    job: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    rows_read: int | None
    inserted: int | None
    updated: int | None
    deleted: int | None
    unchanged: int | None
    error: str | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def changed(self) -> int:
        return (self.inserted or 0) + (self.updated or 0) + (self.deleted or 0)


@dataclass(frozen=True)
class JobStatus:
    name: str
    target: str | None
    schedule: str | None
    next_run: datetime | None
    runs: list[Run]  # newest first
    # Heroku Connect targets: backlog, drain, failed, failures (sync.heroku_connect.report)
    heroku_connect: dict[str, Any] | None = None

    def health(self, now: datetime) -> str:
        """'' when fine; else why an operator should look: the latest run failed, or a
        scheduled job has not run for two of its slots (the clock is down or a run hangs)."""
        from sync.schedule import previous_slot

        if self.runs and self.runs[0].status != "ok":
            first = self.runs[0]
            for r in self.runs:
                if r.status == "ok":
                    break
                first = r
            return f"FAILING since {_when(first.started_at)}"
        if self.schedule and self.runs:
            two_slots_ago = previous_slot(self.schedule, previous_slot(self.schedule, now))
            if self.runs[0].started_at < two_slots_ago:
                return f"LATE: no run since {_when(self.runs[0].started_at)}"
        return ""


# -- reading ---------------------------------------------------------------------------------


_RUNS_SQL = """
select job, started_at, finished_at, status, rows_read, rows_inserted, rows_updated,
       rows_deleted, rows_unchanged, error
from (
    select r.*, row_number() over (partition by job order by started_at desc) as n
    from r2sf.sync_runs r
    where started_at >= $1
) x
where n <= $2
order by job, started_at desc
"""


async def read_runs(conn: Any, since: datetime, per_job: int) -> dict[str, list[Run]]:
    """Runs since `since`, at most `per_job` per job, newest first; {} before the first sync."""
    if not await conn.fetchval("select to_regclass('r2sf.sync_runs') is not null"):
        return {}
    out: dict[str, list[Run]] = {}
    for r in await conn.fetch(_RUNS_SQL, since, per_job):
        out.setdefault(r["job"], []).append(
            Run(
                job=r["job"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                status=r["status"],
                rows_read=r["rows_read"],
                inserted=r["rows_inserted"],
                updated=r["rows_updated"],
                deleted=r["rows_deleted"],
                unchanged=r["rows_unchanged"],
                error=r["error"],
            )
        )
    return out


async def _heroku_connect(conn: Any, job: Any) -> dict[str, Any] | None:
    from sync.heroku_connect import report

    schema, table = job.target.split(".", 1)
    exists = await conn.fetchval(
        "select to_regclass($1) is not null", f"{ident(schema)}.{ident(table)}"
    )
    if not exists:
        return None
    return await report(conn, schema, table, job.heroku_connect.external_id)


def _jobs(settings: Settings) -> list[Any]:
    from sync.config import load_jobs

    # The file was validated when the settings were loaded: a bad [sync] section never gets here.
    return load_jobs(settings.file, settings.config_where)


async def job_statuses(
    conn: Any, settings: Settings, since: datetime, per_job: int, now: datetime | None = None
) -> list[JobStatus]:
    """Configured jobs (in config order), then jobs that ran but are no longer configured."""
    from sync.schedule import next_run

    now = now or datetime.now(UTC)
    runs = await read_runs(conn, since, per_job)
    out = []
    for job in _jobs(settings):
        hc = await _heroku_connect(conn, job) if job.heroku_connect is not None else None
        nxt = next_run(job.schedule, now) if job.schedule else None
        out.append(JobStatus(job.name, job.target, job.schedule, nxt, runs.pop(job.name, []), hc))
    for name, old in sorted(runs.items()):
        out.append(JobStatus(name, None, None, None, old))
    return out


_LAST_SQL = """
select job, extract(epoch from max(finished_at) filter (where status = 'ok')) as last_ok,
       (array_agg(status order by started_at desc, id desc))[1] as last_status
from r2sf.sync_runs group by job
"""


async def sync_gauges(conn: Any) -> list[tuple[str, str, dict[str, str], float]]:
    """Per job: when it last succeeded (Unix time, 0 never) and whether its latest run failed."""
    if not await conn.fetchval("select to_regclass('r2sf.sync_runs') is not null"):
        return []
    out: list[tuple[str, str, dict[str, str], float]] = []
    for r in await conn.fetch(_LAST_SQL):
        labels = {"job": r["job"]}
        out.append(("r2sf_sync_last_success_timestamp_seconds",
                    "When the job's latest successful run finished (Unix time; 0: never).",
                    labels, float(r["last_ok"] or 0)))  # fmt: skip
        out.append(("r2sf_sync_last_run_failed", "1 when the job's latest run failed.",
                    labels, 1.0 if r["last_status"] != "ok" else 0.0))  # fmt: skip
    return out


# -- r2sf status / r2sf migrate ----------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="last sync runs per job and the next scheduled")
    status.add_argument("--runs", type=int, default=5, help="runs to show per job (default 5)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=status_command)
    migrate = commands.add_parser(
        "migrate", help="create or upgrade the r2sf schema in DATABASE_URL (Heroku release phase)"
    )
    migrate.set_defaults(handler=migrate_command)


def status_command(args: argparse.Namespace) -> int:
    from service.config_store import with_stored

    settings, _ = with_stored(load_settings(args.config))
    statuses, change_log = asyncio.run(_statuses(settings, max(args.runs, 1)))
    if args.json:
        json.dump([_as_json(s) for s in statuses], sys.stdout, indent=2, default=str)
        print()
    else:
        print_status(statuses, sys.stdout)
        for table, rows in sorted(change_log.items()):
            print(f"change tracking: {table}: {rows:,} change(s) kept for delta links")
    # Non-zero when a job's latest run failed or a scheduled job is late, for cron monitors.
    now = datetime.now(UTC)
    return 1 if any(s.health(now) for s in statuses) else 0


async def _statuses(settings: Settings, per_job: int) -> tuple[list[JobStatus], dict[str, int]]:
    """Every job's status, and the change log's size per tracked table."""
    from odata.changes import log_size

    conn = await asyncpg.connect(settings.database_url, timeout=10, statement_cache_size=0)
    try:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return await job_statuses(conn, settings, epoch, per_job), await log_size(conn)
    finally:
        await conn.close()


def _as_json(s: JobStatus) -> dict[str, Any]:
    out = asdict(s)
    for run, raw in zip(s.runs, out["runs"], strict=True):
        raw["seconds"] = run.seconds
        raw["changed"] = run.changed
    return out


def _when(t: datetime | None) -> str:
    return when(t, none="-")


def _run_line(r: Run) -> str:
    took = "running" if r.seconds is None else f"{r.seconds:.1f} s"
    if r.status == "ok":
        what = (
            f"changed {r.changed:,} (+{r.inserted or 0:,} ~{r.updated or 0:,} -{r.deleted or 0:,}"
        )
        what += f", read {r.rows_read or 0:,})"
    else:
        what = (r.error or "").splitlines()[0] if r.error else ""
    return f"  {_when(r.started_at)}  {took:>9}  {r.status:<6}  {what}"


def print_status(statuses: Sequence[JobStatus], out: TextIO) -> None:
    if not statuses:
        print("no sync jobs configured and no runs recorded", file=out)
        return
    for s in statuses:
        head = f"job {s.name}"
        if s.target:
            head += f" -> {s.target}"
        if s.schedule:
            head += f"  schedule '{s.schedule}', next {_when(s.next_run)}"
        elif s.target:
            head += "  (no schedule: run with `r2sf sync`)"
        else:
            head += "  (no longer configured)"
        print(head, file=out)
        health = s.health(datetime.now(UTC))
        if health:
            print(f"  {health}", file=out)
        if s.heroku_connect is not None:
            print(f"  Heroku Connect: {_hc_summary(s.heroku_connect)}", file=out)
            for failure in s.heroku_connect.get("failures", []):
                print(f"    FAILED {failure}", file=out)
        if not s.runs:
            print("  no runs recorded yet", file=out)
        for r in s.runs:
            print(_run_line(r), file=out)


def _hc_summary(hc: dict[str, Any]) -> str:
    """`3 change(s) waiting to be pushed (under a minute), 2 row(s) FAILED`."""
    parts = []
    if "backlog" in hc:
        parts.append(
            f"{hc['backlog']:,} change(s) waiting to be pushed ({hc['drain']})"
            if hc["backlog"]
            else "nothing waiting to be pushed"
        )
    if "failed" in hc:
        parts.append(f"{hc['failed']:,} row(s) FAILED (_hc_lastop)")
    return ", ".join(parts) or "not a Heroku Connect table"


def migrate_command(args: argparse.Namespace) -> int:
    import os

    from sync.schema import migrate
    from sync.settings import database_url

    url = database_url(os.environ)  # the one setting it needs

    async def run() -> int:
        conn = await asyncpg.connect(url, timeout=30, statement_cache_size=0)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    version = asyncio.run(run())
    print(f"r2sf migrate: schema r2sf is at version {version}")
    return 0


# -- the page at / ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SetRow:
    name: str
    relation: str
    rows: int | None
    estimated: bool
    url: str
    changes: int | None = None  # change tracking on: entries in the change log


async def set_rows(conn: Any, app: App, root: str) -> list[SetRow]:
    """Each entity set with its row count: the planner's estimate for big tables, else exact."""
    assert app.odata is not None
    from odata.changes import log_size

    model = app.odata.published.model
    log = await log_size(conn)
    out = []
    for s in model.entity_sets:
        table = f"{ident(s.schema)}.{ident(s.table)}"
        estimate = await conn.fetchval(
            "select reltuples::bigint from pg_class where oid = to_regclass($1)", table
        )
        rows: int | None
        if estimate is not None and estimate >= EXACT_COUNT_BELOW:
            rows, estimated = int(estimate), True
        else:
            # Small or never analysed (-1), or a view: count, but never hang the page on it.
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"set local statement_timeout = {COUNT_TIMEOUT_MS}")
                    rows = await conn.fetchval(f"select count(*) from {table}")
            except asyncpg.QueryCanceledError:
                rows = None
            estimated = False
        tracked = s.name in app.odata.published.relids
        kept = log.get(f"{s.schema}.{s.table}", 0) if tracked else None
        out.append(SetRow(s.name, f"{s.schema}.{s.table}", rows, estimated, root + s.name, kept))
    return out


async def status_page(app: App, service_root: str) -> tuple[int, str]:
    """(HTTP status, HTML) of the status page."""
    assert app.pool is not None
    now = datetime.now(UTC)
    async with app.pool.acquire() as conn:
        sets = await set_rows(conn, app, service_root)
        jobs = await job_statuses(conn, app.settings, now - timedelta(days=PAGE_DAYS),
                                  PAGE_RUNS_PER_JOB, now)  # fmt: skip
        last_error = await conn.fetchrow(
            "select job, started_at, error from r2sf.sync_runs where status <> 'ok'"
            " order by started_at desc limit 1"
        ) if await conn.fetchval("select to_regclass('r2sf.sync_runs') is not null") else None  # fmt: skip
    return 200, render_page(sets, jobs, last_error, service_root, now)


def status_router(app: App) -> APIRouter:
    """GET / for the FastAPI part of the app; authentication has already been checked."""
    # Imported here: `r2sf sync` and the other commands never serve pages, and FastAPI took
    # 0.6 s of every command's start (a scheduled sync's included).
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse

    router = APIRouter()

    async def index(request: Request) -> HTMLResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        root = service_root(request.scope, headers, app.root)
        status, body = await status_page(app, root)
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    # The annotations are strings (postponed evaluation), which FastAPI would look up in this
    # module's globals, where Request is not: give it the classes.
    index.__annotations__.update({"request": Request, "return": HTMLResponse})
    router.get("/", response_class=HTMLResponse)(index)
    return router


def _fmt_tracking(r: SetRow) -> str:
    if r.changes is None:
        return "off"
    return f"on, {r.changes:,} change(s) kept"


def _fmt_rows(r: SetRow) -> str:
    if r.rows is None:
        return "?"
    return ("≈ " if r.estimated else "") + f"{r.rows:,}"


def chart(runs: Sequence[Run], width: int = 640, height: int = 190) -> str:
    """Bars: rows changed per run (left axis); line: duration per run in seconds (right axis);
    oldest run on the left, start times (UTC) below."""
    runs = sorted(runs, key=lambda r: r.started_at)
    if not runs:
        return '<p class="muted">no runs in the last days</p>'
    pad_l, pad_r, pad_t, pad_b = 58, 58, 26, 40
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    max_rows = max(r.changed for r in runs) or 1
    max_secs = max((r.seconds or 0.0) for r in runs) or 1.0
    step = w / len(runs)
    bar_w = min(max(1.0, step * 0.7), 16.0)  # a few runs should not look like a wall
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="rows changed (bars, left axis) and duration in seconds (line, right axis)'
        f' per run">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="#f6f8fa"/>',
    ]
    # Axes: ticks at 0, half and max, gridlines across.
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + h - h * frac
        parts.append(
            f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d6dbe3"/>'
            f'<text x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end">{max_rows * frac:,.0f}</text>'
            f'<text x="{pad_l + w + 6}" y="{y + 4:.1f}">{max_secs * frac:.1f} s</text>'
        )
    points = []
    for i, r in enumerate(runs):
        x = pad_l + i * step + (step - bar_w) / 2
        bh = h * r.changed / max_rows
        color = "#d92d20" if r.status != "ok" else "#2f6fde"
        if r.status != "ok":
            bh = h  # a failed run is a full-height red bar: impossible to miss
        title = (
            f"{_when(r.started_at)}: {r.status}, {r.changed:,} rows changed, "
            f"{(r.seconds or 0):.1f} s"
        )
        parts.append(
            f'<rect x="{x:.1f}" y="{pad_t + h - bh:.1f}" width="{bar_w:.1f}" height="{bh:.1f}"'
            f' fill="{color}" opacity="{0.35 if r.status != "ok" else 0.8}">'
            f"<title>{e(title)}</title></rect>"
        )
        cx = pad_l + i * step + step / 2
        cy = pad_t + h - h * (r.seconds or 0.0) / max_secs
        points.append(f"{cx:.1f},{cy:.1f}")
    parts.append(
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#e8891c" stroke-width="2"/>'
    )
    parts.append(
        f'<text x="{pad_l}" y="14" fill="#2f6fde">■ rows changed per run</text>'
        f'<text x="{width - 4}" y="14" text-anchor="end">duration (s) per run'
        ' <tspan fill="#e8891c">━</tspan></text>'
        f'<text x="{pad_l}" y="{pad_t + h + 16}">{e(_when(runs[0].started_at))}</text>'
        f'<text x="{pad_l + w}" y="{pad_t + h + 16}" text-anchor="end">'
        f"{e(_when(runs[-1].started_at))}</text>"
        f'<text x="{pad_l + w / 2:.0f}" y="{height - 4}" text-anchor="middle">run start (UTC)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_page(
    sets: Sequence[SetRow],
    jobs: Sequence[JobStatus],
    last_error: Any,
    service_root: str,
    now: datetime,
) -> str:
    out = [
        f'<p class="muted">{e(_when(now))} · OData service root '
        f'<a href="{e(service_root)}">{e(service_root)}</a> · '
        f'<a href="{e(service_root)}$metadata">$metadata</a></p>',
        f"<h2>Entity sets ({len(sets)})</h2>",
        '<div class="table-wrap"><table><tr><th>Entity set</th><th>Table</th><th>Rows</th>'
        "<th>Change tracking</th><th>OData URL</th></tr>",
    ]
    for s in sets:
        out.append(
            f"<tr><td>{e(s.name)}</td><td>{e(s.relation)}</td>"
            f'<td class="n">{e(_fmt_rows(s))}</td>'
            f"<td>{e(_fmt_tracking(s))}</td>"
            f'<td><a href="{e(s.url)}">{e(s.url)}</a></td></tr>'
        )
    out.append("</table></div>")
    if not sets:
        out.append('<p class="muted">nothing exposed: check [odata] expose (r2sf check)</p>')
    out.append(f"<h2>Sync jobs (last {PAGE_DAYS} days)</h2>")
    if not jobs:
        out.append('<p class="muted">no sync jobs configured and no runs recorded</p>')
    for j in jobs:
        last = j.runs[0] if j.runs else None
        state = (
            f'<span class="{e(last.status)}">{e(last.status)}</span> {e(_when(last.started_at))}'
            f", {last.changed:,} rows changed in {(last.seconds or 0):.1f} s"
            if last
            else '<span class="muted">no runs yet</span>'
        )
        sched = (
            f" · schedule <code>{e(j.schedule)}</code>, next {e(_when(j.next_run))}"
            if j.schedule
            else ""
        )
        hc = ""
        if j.heroku_connect is not None:
            cls = "failed" if j.heroku_connect.get("failed") else "muted"
            hc = (
                f'<br><span class="{cls}">Heroku Connect: {e(_hc_summary(j.heroku_connect))}</span>'
            )
            hc += "".join(
                f'<br><span class="failed">FAILED {e(f)}</span>'
                for f in j.heroku_connect.get("failures", [])
            )
        target = f" → {e(j.target)}" if j.target else ""
        health = j.health(now)
        badge = f' <span class="failed"><strong>{e(health)}</strong></span>' if health else ""
        out.append(
            f'<div class="job"><strong>{e(j.name)}</strong>{target}{badge}<br>'
            f"last run: {state}{sched}{hc}<br>{chart(j.runs)}</div>"
        )
    out.append("<h2>Last error</h2>")
    if last_error is None:
        out.append('<p class="muted">no failed run recorded</p>')
    else:
        out.append(
            f"<p>job <strong>{e(last_error['job'])}</strong>, "
            f"{e(_when(last_error['started_at']))}</p><pre>{e(last_error['error'] or '')}</pre>"
        )
    from service.admin.page import page

    return page("Status", "status", service_root, out)
