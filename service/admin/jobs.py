"""Console pages for sync jobs: the list, the form (from the warehouse catalogue or a query),
preview, save, dry run and run now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from odata.ident import ident
from service import config_store
from service.admin import cron
from service.admin.context import Console, Form, error_field, notice, redirect
from service.admin.page import checkbox, e, field, select, table, when
from service.config import ConfigError
from sync import discover, stored_config
from sync.config import Job
from sync.errors import SyncError
from sync.stored_config import StaleVersion

# The job keys the form edits; any other key of a job (batch_size...) is kept as it is.
FORM_KEYS = frozenset({
    "name", "table", "query", "target", "key", "columns", "deletes", "soft_delete_column",
    "max_deletes", "max_changes", "incremental", "heroku_connect", "schedule", "full_refresh",
    "timeout", "create", "compare", "fetch_size", "lock_timeout",
})  # fmt: skip


def _jobs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = doc.setdefault("sync", {}).setdefault("jobs", [])
    return jobs


def _int_or_text(v: str) -> int | str:
    v = v.strip()
    return int(v) if v.isdigit() else v


def _scale(text: str) -> dict[str, int | str]:
    """`amount=2, fee=4` -> {"amount": 2, "fee": 4}; a part that is not `column=places` is kept
    as text for the job's validation to name."""
    out: dict[str, int | str] = {}
    for part in text.split(","):
        column, _, places = part.partition("=")
        if column.strip():
            out[column.strip()] = _int_or_text(places)
    return out


def _scale_text(scale: dict[str, Any]) -> str:
    return ", ".join(f"{column}={places}" for column, places in scale.items())


def job_from_form(f: Form, existing: dict[str, Any] | None) -> dict[str, Any]:
    """The job's TOML table from the posted form (validation comes later, in one place)."""
    d: dict[str, Any] = {k: v for k, v in (existing or {}).items() if k not in FORM_KEYS}
    d["name"] = f.get("name").strip()
    if f.get("source_kind") == "query":
        d["query"] = f.get("query").strip()
    else:
        d["table"] = f.get("table").strip()
    d["target"] = f.get("target").strip()
    d["key"] = [k.strip() for k in f.get("key").split(",") if k.strip()]
    mapping = {s: t.strip() for s, t in f.prefixed("map.").items() if t.strip() and t.strip() != s}
    if mapping:
        d["columns"] = mapping
    for name in ("schedule", "full_refresh", "soft_delete_column"):
        if f.get(name).strip():
            d[name] = f.get(name).strip()
    if f.get("deletes", "ignore") != "ignore":
        d["deletes"] = f.get("deletes")
    for name in ("max_deletes", "max_changes", "timeout", "fetch_size", "lock_timeout"):
        if f.get(name).strip():
            d[name] = _int_or_text(f.get(name))
    if f.get("compare", "auto") != "auto":
        d["compare"] = f.get("compare")
    if f.get("incremental").strip():
        inc: dict[str, Any] = {"column": f.get("incremental").strip()}
        if f.get("lookback").strip():
            inc["lookback"] = _int_or_text(f.get("lookback"))
        d["incremental"] = inc
    if f.get("external_id").strip():
        hc = dict((existing or {}).get("heroku_connect", {}))
        hc["external_id"] = f.get("external_id").strip()
        hc.pop("scale", None)
        if f.get("scale").strip():
            hc["scale"] = _scale(f.get("scale"))
        d["heroku_connect"] = hc
    if not f.get("create"):
        d["create"] = False
    return d


async def _last_runs(conn: Any) -> dict[str, Any]:
    if not await conn.fetchval("SELECT to_regclass('r2sf.sync_runs') IS NOT NULL"):
        return {}
    rows = await conn.fetch(
        "SELECT DISTINCT ON (job) job, started_at, finished_at, status, rows_inserted,"
        " rows_updated, rows_deleted, error FROM r2sf.sync_runs ORDER BY job, started_at DESC"
    )
    return {r["job"]: r for r in rows}


async def _target_types(conn: Any, target: str) -> dict[str, str] | None:
    """Column -> type of the target table, or None when it does not exist yet."""
    schema, _, name = target.partition(".")
    if not name:
        return None
    rows = await conn.fetch(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        f"{ident(schema)}.{ident(name)}",
    )
    return {r["attname"]: r["type"] for r in rows} if rows else None


def auto_map(columns: list[str], target_cols: dict[str, str] | None, hc: bool) -> dict[str, str]:
    """Source column -> target column by name: the same name (any case), or `name__c` for a
    Heroku Connect mapping; a new table takes the source names."""
    if not target_cols:
        return {c: c for c in columns}
    lower = {t.lower(): t for t in target_cols}
    out = {}
    for c in columns:
        candidates = [c.lower(), c.lower() + "__c"] if hc else [c.lower()]
        out[c] = next((lower[x] for x in candidates if x in lower), c)
    return out


def routes(router: APIRouter, console: Console) -> None:
    @router.get("/admin", response_class=HTMLResponse)
    @router.get("/admin/", response_class=HTMLResponse)
    async def home(request: Request) -> Response:
        console.user(request)
        return redirect("/admin/jobs")

    @router.get("/admin/jobs", response_class=HTMLResponse)
    async def job_list(request: Request) -> HTMLResponse:
        console.user(request)
        version, doc = await console.current()
        async with console.conn() as conn:
            last = await _last_runs(conn)
        now = datetime.now(UTC)
        rows = []
        for j in _jobs(doc):
            name = str(j.get("name", ""))
            run = last.get(name)
            last_text = (
                f'<span class="{e(run["status"])}">{e(run["status"])}</span> {e(when(run["started_at"], seconds=False))}'
                if run
                else '<span class="muted">never</span>'
            )
            sched = str(j.get("schedule") or "")
            nxt = cron.next_times(sched, now, 1) if sched else []
            rows.append([
                f'<a href="/admin/jobs/{e(quote(name))}">{e(name)}</a>',
                e(j.get("table") or "query"),
                e(j.get("target", "")),
                e(cron.describe(sched)) if sched else '<span class="muted">manual</span>',
                last_text,
                e(when(nxt[0], seconds=False)) if nxt else "—",
            ])  # fmt: skip
        body = [
            notice(f"Saved as version {request.query_params['saved']}; the scheduler and the"
                   " service pick it up within seconds.") if "saved" in request.query_params
            else "",
            f'<p class="muted">Configuration version {version or "— (from " + e(console.app.file_settings.config_where) + ")"}.</p>',
            '<div class="buttons"><a class="button" href="/admin/jobs/new">New job from the warehouse</a>'
            '<a class="button" href="/admin/jobs/new?query=1">New job from a query</a></div>',
            table(["Job", "Source", "Target", "Schedule", "Last run", "Next run"], rows)
            if rows else '<p class="muted">No sync jobs yet.</p>',
        ]  # fmt: skip
        return console.render(request, "Sync jobs", "jobs", body)

    @router.get("/admin/jobs/new", response_class=HTMLResponse)
    async def new_job(request: Request) -> HTMLResponse:
        console.user(request)
        q = request.query_params
        version, _ = await console.current()
        if q.get("table"):
            tname = q["table"]
            schema, _, name = tname.partition(".")
            job: dict[str, Any] = {"name": name, "table": tname, "target": f"public.{name}"}
            columns: list[tuple[str, str]] = []
            try:
                found = await discover.read_tables(console.source_url(), schema, [name])
                columns, job["key"] = found[0].columns, found[0].key
            except (SyncError, ConfigError) as exc:
                return await _form(request, console, job, version, error=str(exc))
            return await _form(request, console, job, version, columns=columns, new=True)
        if q.get("query"):
            return await _form(request, console, {"query": "", "target": "public."}, version,
                               new=True)  # fmt: skip
        return await _catalogue(request, console, q.get("schema", "public"))

    @router.get("/admin/jobs/{name}", response_class=HTMLResponse)
    async def edit_job(request: Request, name: str) -> HTMLResponse:
        console.user(request)
        version, doc = await console.current()
        job = next((j for j in _jobs(doc) if j.get("name") == name), None)
        if job is None:
            return console.render(request, "No such job", "jobs",
                                  [notice(f"There is no job named {name}.", "error")], status=404)  # fmt: skip
        columns: list[tuple[str, str]] = []
        if job.get("table"):
            schema, _, tname = str(job["table"]).partition(".")
            try:
                columns = (await discover.read_tables(console.source_url(), schema, [tname]))[
                    0
                ].columns
            except (SyncError, ConfigError):
                columns = []
        saved = request.query_params.get("saved")
        return await _form(request, console, job, version, columns=columns,
                           message=f"Saved as version {saved}." if saved else None)  # fmt: skip

    @router.post("/admin/jobs/save", response_class=HTMLResponse)
    async def save_job(request: Request) -> Response:
        user, f = await console.form(request)
        version, doc = await console.current()
        original = f.get("original")
        jobs = _jobs(doc)
        existing = next((j for j in jobs if j.get("name") == original), None) if original else None
        job = job_from_form(f, existing)
        columns = [(c, t) for c, t in zip(f.getlist("col"), f.getlist("coltype"), strict=False)]
        if f.get("action") == "preview":
            return await _form(request, console, job, version, columns=columns, preview=True,
                               new=not original, original=original)  # fmt: skip
        if existing is not None:
            jobs[jobs.index(existing)] = job
        else:
            jobs.append(job)
        based_on = int(f.get("version") or 0)
        what = "changed" if existing is not None else "added"
        try:
            saved = await console.save(doc, who=user, action=f"{what} job {job['name']}",
                                       based_on=based_on)  # fmt: skip
        except (ConfigError, StaleVersion) as exc:
            bad = error_field(exc) if isinstance(exc, ConfigError) else None
            return await _form(request, console, job, version, columns=columns, error=str(exc),
                               invalid=bad, new=not original, original=original, status=400)  # fmt: skip
        return redirect(f"/admin/jobs/{quote(job['name'])}?saved={saved}")

    @router.post("/admin/jobs/{name}/delete")
    async def delete_job(request: Request, name: str) -> Response:
        user, f = await console.form(request)
        _, doc = await console.current()
        doc["sync"]["jobs"] = [j for j in _jobs(doc) if j.get("name") != name]
        await console.save(doc, who=user, action=f"removed job {name}",
                           based_on=int(f.get("version") or 0))  # fmt: skip
        return redirect("/admin/jobs")

    @router.post("/admin/jobs/{name}/run")
    async def run(request: Request, name: str) -> Response:
        user, f = await console.form(request)
        dry = f.get("mode") == "dry"
        settings = console.app.settings
        _, doc = await console.current()  # what was just saved, even before it is applied
        try:
            _, loaded = config_store.validate(console.app.file_settings, doc, "console")
            job = {j.name: j for j in loaded}[name]
            source = console.source_url()
        except (ConfigError, KeyError) as exc:
            return console.render(request, "Cannot run", "jobs",
                                  [notice(str(exc), "error")], status=400)  # fmt: skip
        action = "dry run" if dry else "run now"
        async with console.conn() as conn:
            event = await stored_config.record(conn, user, action, name, state_="running")
        console.spawn(_run(console, job, settings.database_url, source, dry, event))
        return redirect(f"/admin/jobs/{quote(name)}")


async def _run(console: Console, job: Job, target: str, source: str, dry: bool, event: int) -> None:
    import io

    from sync.engine import run_job
    from sync.progress import Reporter

    try:
        result = await run_job(job, target_url=target, source_url=source, dry_run=dry,
                               reporter=Reporter(io.StringIO(), tty=False))  # fmt: skip
        detail = {**result.summary(), "samples": result.samples}
        state = "done"
    except SyncError as exc:
        detail, state = {"error": exc.message}, "failed"
    except Exception as exc:  # the page must say it ended; the log has the detail
        detail, state = {"error": f"unexpected {type(exc).__name__}"}, "failed"
    async with console.conn() as conn:
        await stored_config.finish(conn, event, state, detail)


async def _catalogue(request: Request, console: Console, schema: str) -> HTMLResponse:
    body = [
        '<form method=get action="/admin/jobs/new" class=card>',
        field("schema", "Warehouse schema", schema, hint="the schema whose tables to list"),
        '<div class="buttons"><button type=submit>List tables</button></div></form>',
    ]
    try:
        tables = await discover.read_tables(console.source_url(), schema, [])
    except (SyncError, ConfigError) as exc:
        body.append(notice(str(exc), "error"))
        return console.render(request, "New job: pick a warehouse table", "jobs", body)
    rows = [
        [
            e(t.name),
            e(", ".join(c for c, _ in t.columns)),
            e(", ".join(t.key))
            + (' <span class="muted">(guessed)</span>' if t.key_guessed else ""),
            f'<a href="/admin/jobs/new?table={e(quote(schema + "." + t.name))}"'
            f' aria-label="Use table {e(t.name)}">Use this table</a>',
        ]
        for t in tables
    ]
    body.append(table(["Table", "Columns", "Key", ""], rows, f"{len(tables)} table(s) in {schema}"))
    body.append('<p><a href="/admin/jobs/new?query=1">Write a query instead</a></p>')
    return console.render(request, "New job: pick a warehouse table", "jobs", body)


async def _form(
    request: Request,
    console: Console,
    job: dict[str, Any],
    version: int,
    *,
    columns: list[tuple[str, str]] | None = None,
    error: str | None = None,
    message: str | None = None,
    invalid: str | None = None,
    preview: bool = False,
    new: bool = False,
    original: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    columns = list(columns or [])
    target = str(job.get("target", ""))
    async with console.conn() as conn:
        target_cols = await _target_types(conn, target)
        events = [] if new else await stored_config.events(conn, 10, str(job.get("name")))
    preview_html: list[str] = []
    if preview:
        try:
            sql = (
                Job.model_construct(**job).source_sql
                if (job.get("table") or job.get("query"))
                else ""
            )
            names, rows = await discover.preview(console.source_url(), sql, 5)
            types = dict(columns)
            columns = [(n, types.get(n, "")) for n in names]
            preview_html.append("<h2>Preview: the first rows</h2>")
            preview_html.append(table([e(n) for n in names], [[e(v) for v in r] for r in rows]))
        except (SyncError, ConfigError, ValueError) as exc:
            preview_html.append(notice(str(exc), "error"))
    mapping = auto_map([c for c, _ in columns], target_cols, bool(job.get("heroku_connect")))
    mapping.update(job.get("columns", {}))
    inv = invalid
    is_query = "query" in job
    title = f"Job {job['name']}" if not new and job.get("name") else "New sync job"
    body: list[str] = []
    if message:
        body.append(notice(message))
    if error:
        body.append(notice(error, "error"))
    body += [
        '<form method=post action="/admin/jobs/save" class=card id=job-form>',
        console.csrf_input(request),
        f'<input type=hidden name=version value="{version}">',
        f'<input type=hidden name=original value="{e(original if original is not None else ("" if new else job.get("name", "")))}">',
        f'<input type=hidden name=source_kind value="{"query" if is_query else "table"}">',
        '<fieldset><legend>Source and target</legend><div class=grid2>',
        field("name", "Job name", job.get("name", ""), hint="letters, digits, _ - .", invalid=inv == "name"),
        field("target", "Target table", target, hint="schema.table in Heroku Postgres", invalid=inv == "target"),
        "</div>",
        field("query", "Warehouse query", job.get("query", ""), kind="textarea", invalid=inv == "query",
              hint="a SELECT whose rows the job copies") if is_query else
        field("table", "Warehouse table", job.get("table", ""), hint="schema.table, from the catalogue",
              invalid=inv == "table"),
        field("key", "Key columns", ", ".join(job.get("key", [])), invalid=inv == "key",
              hint="comma-separated; identifies a row in source and target"),
        "</fieldset>",
    ]  # fmt: skip
    if columns:
        map_rows = []
        for c, t in columns:
            fid = "f-map-" + c
            tt = (target_cols or {}).get(mapping.get(c, c))
            ttype = (
                e(tt) if tt else f'<span class="muted">new column: {e(t) or "source type"}</span>'
            )
            map_rows.append([
                f'<label for="{e(fid)}">{e(c)}</label><input type=hidden name=col value="{e(c)}">'
                f'<input type=hidden name=coltype value="{e(t)}">',
                e(t),
                f'<input type=text id="{e(fid)}" name="map.{e(c)}" value="{e(mapping.get(c, c))}">',
                ttype,
            ])  # fmt: skip
        body.append("<fieldset><legend>Column mapping (matched by name; edit to change)</legend>")
        body.append(
            table(["Source column", "Source type", "Target column", "Target type"], map_rows)
        )
        body.append("</fieldset>")
    inc = job.get("incremental") or {}
    schedule = str(job.get("schedule") or "")
    sched_hint = "cron, five fields, UTC; empty: only on demand"
    sched_html = ""
    if schedule:
        times = cron.next_times(schedule, datetime.now(UTC))
        sched_html = (
            f'<div class="notice" id=schedule-preview><strong>{e(cron.describe(schedule))}</strong>'
            + (". Next: " + ", ".join(e(when(t, seconds=False)) for t in times) if times else "")
            + "</div>"
        )
    md = job.get("max_deletes")
    body += [
        "<fieldset><legend>Deletes and limits</legend><div class=grid2>",
        select("deletes", "Rows gone from the warehouse",
               [("ignore", "leave them (ignore)"), ("hard", "delete them (hard)"),
                ("soft", "mark them (soft)")], str(job.get("deletes", "ignore")),
               invalid=inv == "deletes"),
        field("soft_delete_column", "Soft-delete column", job.get("soft_delete_column", ""),
              hint='for "mark them": a boolean column', invalid=inv == "soft_delete_column"),
        field("max_deletes", "Most deletes per run", "" if md is None else md,
              hint='a count (500) or a percentage ("10%"); default 10%', invalid=inv == "max_deletes"),
        field("max_changes", "Most changed rows per run", job.get("max_changes", ""),
              hint="empty: no limit (50,000 for Heroku Connect)", invalid=inv == "max_changes"),
        field("incremental", "Incremental column", inc.get("column", ""),
              hint="read only rows above the last value (empty: read everything)",
              invalid=inv == "incremental"),
        field("lookback", "Look back", inc.get("lookback", ""), hint='e.g. "2 hours"',
              invalid=inv == "lookback"),
        field("timeout", "Timeout (seconds)", job.get("timeout", ""), hint="default 3600",
              invalid=inv == "timeout"),
        "</div>",
        checkbox("create", "Create the target table if it does not exist", job.get("create", True)),
        "</fieldset>",
        "<fieldset><legend>Heroku Connect</legend><div class=grid2>",
        field("external_id", "External ID column", (job.get("heroku_connect") or {}).get("external_id", ""),
              hint="set it when the target is a Heroku Connect mapping (salesforce.*)",
              invalid=inv in ("external_id", "heroku_connect")),
        field("scale", "Decimal places of double columns",
              _scale_text((job.get("heroku_connect") or {}).get("scale", {})),
              hint="column=places, comma-separated: what the Salesforce field keeps (amount=2)",
              invalid=inv == "heroku_connect"),
        "</div></fieldset>",
        "<fieldset><legend>Comparing and reading</legend><div class=grid2>",
        select("compare", "How a rerun finds changes",
               [("auto", "fingerprints once the target has 50,000 rows (auto)"),
                ("fingerprints", "always compare fingerprints first"),
                ("full", "compare every row (full)")], str(job.get("compare", "auto")),
               invalid=inv == "compare"),
        field("fetch_size", "Fetch size (rows)", job.get("fetch_size", ""),
              hint="rows per FETCH from Redshift; empty: chosen from the cluster",
              invalid=inv == "fetch_size"),
        field("lock_timeout", "Lock timeout (seconds)", job.get("lock_timeout", ""),
              hint="how long a run waits for a lock on the target; default 60",
              invalid=inv == "lock_timeout"),
        "</div></fieldset>",
        "<fieldset><legend>Schedule</legend>",
        field("schedule", "Schedule", schedule, hint=sched_hint, invalid=inv == "schedule"),
        sched_html,
        field("full_refresh", "Full refresh schedule", job.get("full_refresh", ""),
              hint="cron (UTC): read everything and apply deletes", invalid=inv == "full_refresh"),
        "</fieldset>",
        '<div class="buttons"><button type=submit name=action value=preview>Preview rows and schedule</button>'
        '<button type=submit name=action value=save class=primary>Save</button></div></form>',
    ]  # fmt: skip
    body += preview_html
    if not new and job.get("name"):
        name = str(job["name"])
        # A run whose worker stopped (a deploy, a restart) never finishes its entry: past the
        # job's timeout it is no longer shown as running.
        limit = int(job.get("timeout") or 3600) + 60
        now = datetime.now(UTC)
        running = any(
            ev.state == "running" and (now - ev.at).total_seconds() < limit for ev in events
        )
        body += [
            "<h2 id=runs>Run</h2>",
            f'<form method=post action="/admin/jobs/{e(quote(name))}/run" class=buttons>',
            console.csrf_input(request),
            "<button type=submit name=mode value=dry>Dry run</button>",
            "<button type=submit name=mode value=run class=primary>Run now</button></form>",
        ]
        for ev in events:
            body.append(_event_html(ev))
        body += [
            f'<form method=post action="/admin/jobs/{e(quote(name))}/delete">',
            console.csrf_input(request),
            f'<input type=hidden name=version value="{version}">',
            '<div class="buttons"><button type=submit>Remove this job</button></div></form>',
        ]
        return console.render(request, title, "jobs", body, status=status,
                              refresh=2 if running else None)  # fmt: skip
    return console.render(request, title, "jobs", body, status=status)


def _event_html(ev: stored_config.Event) -> str:
    d = ev.detail
    head = f"{ev.action} by {ev.who}, {when(ev.at, seconds=False)}: "
    if ev.state == "running":
        return f'<div class="notice" role=status>{e(head)}running…</div>'
    if ev.state == "failed":
        return f'<div class="notice error">{e(head)}failed: {e(d.get("error", ""))}</div>'
    words = (
        ("would insert", "update", "delete")
        if ev.action == "dry run"
        else ("inserted", "updated", "deleted")
    )
    counts = ", ".join(
        f"{w} {d.get(k, 0):,}"
        for w, k in zip(words, ("inserted", "updated", "deleted"), strict=True)
    )
    samples = "".join(
        f"<li>{e(kind)}: {e('; '.join(keys))}</li>"
        for kind, keys in (d.get("samples") or {}).items()
        if keys
    )
    return (
        f'<div class="notice ok result" data-action="{e(ev.action)}">{e(head)}{e(counts)},'
        f" unchanged {d.get('unchanged', 0):,}, read {d.get('read', 0):,}"
        + (f"<ul>{samples}</ul>" if samples else "")
        + "</div>"
    )
