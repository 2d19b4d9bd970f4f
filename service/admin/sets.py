"""Console page for exposed sets: tick tables and views, rename them, switch change tracking,
and see each property's Salesforce field type and what `r2sf check` warns about."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from service.admin.context import Console, Form, error_field, notice, redirect
from service.admin.page import e, table
from service.check import Findings, model_warnings, salesforce_field_type
from service.config import ConfigError
from sync.stored_config import StaleVersion

_RELATIONS = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind IN ('v', 'm') AS is_view
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'r2sf')
  AND n.nspname NOT LIKE 'pg_temp%' AND c.relname NOT LIKE 'r2sf\\_%'
ORDER BY 1, 2
"""


def sets_from_form(
    f: Form, before: list[dict[str, Any]], tracking_default: bool
) -> list[dict[str, Any]]:
    """[[odata.sets]] for the ticked relations; a set's other keys (key, read_only) are kept."""
    old = {s["table"]: s for s in before}
    out = []
    for rel in f.getlist("expose"):
        entry = {k: v for k, v in old.get(rel, {}).items() if k not in ("name", "change_tracking")}
        entry["table"] = rel
        name = f.get("name." + rel).strip()
        if name:
            entry["name"] = name
        tracked = bool(f.get("track." + rel))
        if tracked != tracking_default:
            entry["change_tracking"] = tracked
        out.append(entry)
    return out


def routes(router: APIRouter, console: Console) -> None:
    @router.get("/admin/sets", response_class=HTMLResponse)
    async def sets_page(request: Request) -> HTMLResponse:
        console.user(request)
        return await _page(request, console)

    @router.post("/admin/sets", response_class=HTMLResponse)
    async def save_sets(request: Request) -> Response:
        user, f = await console.form(request)
        _, doc = await console.current()
        odata = doc.setdefault("odata", {})
        default = bool(odata.get("change_tracking", False))
        odata["sets"] = sets_from_form(f, list(odata.get("sets", [])), default)
        odata["expose"] = []  # the ticked list is the whole exposure from now on
        try:
            saved = await console.save(doc, who=user, action="changed exposed sets",
                                       based_on=int(f.get("version") or 0))  # fmt: skip
        except (ConfigError, StaleVersion) as exc:
            bad = error_field(exc) if isinstance(exc, ConfigError) else None
            return await _page(request, console, error=f"{exc}" + (f" ({bad})" if bad else ""),
                               status=400)  # fmt: skip
        return redirect(f"/admin/sets?saved={saved}")


async def _page(request: Request, console: Console, *, error: str | None = None,
                status: int = 200) -> HTMLResponse:  # fmt: skip
    app = console.app
    assert app.odata is not None
    version, _doc = await console.current()
    model = app.odata.published.model
    by_rel = {f"{s.schema}.{s.table}": s for s in model.entity_sets}
    async with console.conn() as conn:
        relations = await conn.fetch(_RELATIONS)
        found = await model_warnings(conn, model, app.settings.odata, Findings())
    saved = request.query_params.get("saved")
    body = []
    if saved:
        body.append(notice(f"Saved as version {saved}; the service applies it within seconds."))
    if error:
        body.append(notice(error, "error"))
    rows = []
    for r in relations:
        rel = f"{r['schema']}.{r['name']}"
        s = by_rel.get(rel)
        rid = rel.replace(".", "-")
        rows.append([
            f'<input type=checkbox id="x-{e(rid)}" name=expose value="{e(rel)}"'
            f'{" checked" if s else ""}><label for="x-{e(rid)}">{e(rel)}</label>'
            + (' <span class="muted">(view)</span>' if r["is_view"] else ""),
            f'<label class="muted" for="n-{e(rid)}" style="font-size:13px">Entity set name</label><br>'
            f'<input type=text id="n-{e(rid)}" name="name.{e(rel)}" value="{e(s.name if s else "")}">',
            f'<input type=checkbox id="t-{e(rid)}" name="track.{e(rel)}" value=1'
            f'{" checked" if s and s.tracked else ""}><label for="t-{e(rid)}">Track changes</label>',
        ])  # fmt: skip
    body += [
        '<p class="muted">Tick what Salesforce should see. Saving lists the ticked tables'
        f" explicitly. Configuration version {version or '— (from the file)'}.</p>",
        '<form method=post action="/admin/sets" class=card>',
        console.csrf_input(request),
        f'<input type=hidden name=version value="{version}">',
        table(["Table or view", "Name in Salesforce", "Change tracking"], rows),
        '<div class="buttons"><button type=submit class=primary>Save exposed sets</button></div></form>',
        "<h2>Warnings (as r2sf check reports them)</h2>",
    ]  # fmt: skip
    warnings = found.errors + found.warnings
    body.append(
        "<ul>" + "".join(f'<li class="warn">{e(w)}</li>' for w in warnings) + "</ul>"
        if warnings
        else '<p class="muted">No warnings.</p>'
    )
    body.append("<h2>Salesforce field types</h2>")
    for s in model.entity_sets:
        props = [
            [e(p.name), e(p.column), e(p.edm_type), e(salesforce_field_type(p))]
            for p in s.entity_type.properties
        ]
        body.append(f"<h3>{e(s.name)} <span class=muted>← {e(s.schema)}.{e(s.table)}</span></h3>")
        body.append(table(["Property", "Column", "OData type", "Salesforce field type"], props))
    return console.render(request, "Exposed sets", "sets", body, status=status)
