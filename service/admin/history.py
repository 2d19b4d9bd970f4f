"""Console page for history: every configuration version (who, when, diff) with roll back, and
what admins ran, next to the sync runs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from service import config_store
from service.admin.context import Console, notice, redirect
from service.admin.page import e, table, when
from service.config import ConfigError
from sync import stored_config
from sync.stored_config import StaleVersion


def routes(router: APIRouter, console: Console) -> None:
    @router.get("/admin/history", response_class=HTMLResponse)
    async def history(request: Request) -> HTMLResponse:
        console.user(request)
        return await _page(request, console)

    @router.post("/admin/history/rollback", response_class=HTMLResponse)
    async def rollback(request: Request) -> Response:
        user, f = await console.form(request)
        try:
            async with console.conn() as conn:
                saved = await config_store.rollback(
                    conn, console.app.file_settings, int(f.get("to") or 0), who=user,
                    based_on=int(f.get("version") or 0),
                )  # fmt: skip
        except (ConfigError, StaleVersion) as exc:
            return await _page(request, console, error=str(exc), status=400)
        return redirect(f"/admin/history?saved={saved}")


async def _page(request: Request, console: Console, *, error: str | None = None,
                status: int = 200) -> HTMLResponse:  # fmt: skip
    async with console.conn() as conn:
        versions = await stored_config.versions(conn, 50)
        events = await stored_config.events(conn, 50)
        runs = (
            await conn.fetch(
                "SELECT job, started_at, status, rows_inserted, rows_updated, rows_deleted"
                " FROM r2sf.sync_runs ORDER BY started_at DESC LIMIT 30"
            )
            if await conn.fetchval("SELECT to_regclass('r2sf.sync_runs') IS NOT NULL")
            else []
        )
    latest = versions[0].id if versions else 0
    body = []
    if request.query_params.get("saved"):
        body.append(notice(f"Rolled back: saved as version {request.query_params['saved']}."))
    if error:
        body.append(notice(error, "error"))
    body.append("<h2>Configuration versions</h2>")
    rows = []
    for v in versions:
        undo = (
            '<span class="muted">current</span>'
            if v.id == latest
            else f'<form method=post action="/admin/history/rollback">{console.csrf_input(request)}'
            f'<input type=hidden name=version value="{latest}">'
            f'<input type=hidden name=to value="{v.id}">'
            f'<button type=submit class=small aria-label="Roll back to version {v.id}">'
            "Roll back to this</button></form>"
        )
        diff = (
            f'<details><summary>diff</summary><pre class="diff">{e(v.diff)}</pre></details>'
            if v.diff
            else '<span class="muted">no change</span>'
        )
        rows.append([str(v.id), e(when(v.saved_at)), e(v.saved_by), e(v.action), diff, undo])
    body.append(
        table(["Version", "Saved", "By", "What", "Change", ""], rows)
        if rows
        else '<p class="muted">Nothing saved yet: the configuration comes from the file.</p>'
    )
    body.append("<h2>Console actions</h2>")
    body.append(
        table(
            ["When", "By", "Action", "Job", "Outcome"],
            [
                [e(when(ev.at)), e(ev.who), e(ev.action), e(ev.subject), e(ev.state)]
                for ev in events
            ],
        )
        if events
        else '<p class="muted">No runs started from the console yet.</p>'
    )
    body.append("<h2>Sync runs</h2>")
    body.append(
        table(
            ["Started", "Job", "Status", "Inserted", "Updated", "Deleted"],
            [
                [
                    e(when(r["started_at"])),
                    e(r["job"]),
                    e(r["status"]),
                    e(r["rows_inserted"] or 0),
                    e(r["rows_updated"] or 0),
                    e(r["rows_deleted"] or 0),
                ]
                for r in runs
            ],
        )
        if runs
        else '<p class="muted">No runs recorded.</p>'
    )
    return console.render(request, "History", "history", body, status=status)
