"""What every console page needs: the user, the CSRF check, the form, the configuration."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service import config_store
from service.admin import page
from service.config import ConfigError
from sync.config import source_url

if TYPE_CHECKING:
    from odata.service import ODataService
    from service.admin.security import ConsoleGate
    from service.config import Settings


class App(Protocol):
    """What the console reads of the running service (service/app.py's App), without importing
    it: the app includes the console's routes."""

    root: str
    pool: Any
    odata: ODataService | None
    settings: Settings
    file_settings: Settings
    console: ConsoleGate


# `console: sync.jobs[2].schedule` -> the form field `schedule`
_FIELD = re.compile(r"(?:sync\.jobs\[\d+\]|odata)\.([A-Za-z_]+)")


@dataclass
class Form:
    pairs: list[tuple[str, str]]

    def get(self, name: str, default: str = "") -> str:
        found = [v for k, v in self.pairs if k == name]
        return found[-1] if found else default

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def prefixed(self, prefix: str) -> dict[str, str]:
        return {k[len(prefix) :]: v for k, v in self.pairs if k.startswith(prefix)}


def error_field(exc: ConfigError) -> str | None:
    m = _FIELD.search(exc.where)
    return m.group(1) if m else None


class Console:
    def __init__(self, app: App) -> None:
        self.app = app
        self._tasks: set[asyncio.Task[None]] = set()

    def user(self, request: Request) -> str:
        user = request.scope.get("state", {}).get("admin_user")
        if not user:  # only reachable if the app's gate was bypassed
            raise HTTPException(401)
        return str(user)

    def service_url(self, request: Request) -> str:
        from service.http import service_root

        headers = {k.lower(): v for k, v in request.headers.items()}
        return service_root(request.scope, headers, self.app.root)

    async def form(self, request: Request) -> tuple[str, Form]:
        """(user, the posted form) after the CSRF check; a forged post gets 403."""
        user = self.user(request)
        body = (await request.body()).decode("utf-8", "replace")
        form = Form(parse_qsl(body, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not self.app.console.check_post(user, form.get("csrf"), headers):
            raise HTTPException(
                403, "the form's security token is missing or stale: reload the page"
            )
        return user, form

    def csrf_input(self, request: Request) -> str:
        token = self.app.console.token(self.user(request))
        return f'<input type="hidden" name="csrf" value="{token}">'

    @asynccontextmanager
    async def conn(self) -> AsyncIterator[Any]:
        assert self.app.pool is not None
        async with self.app.pool.acquire() as conn:
            yield conn

    async def current(self) -> tuple[int, dict[str, Any]]:
        async with self.conn() as conn:
            return await config_store.current(conn, self.app.file_settings)

    async def save(self, doc: dict[str, Any], *, who: str, action: str, based_on: int) -> int:
        async with self.conn() as conn:
            return await config_store.save(conn, self.app.file_settings, doc, who=who,
                                           action=action, based_on=based_on)  # fmt: skip

    def source_url(self) -> str:
        """The warehouse URL (REDSHIFT_URL or [source] url); never rendered."""
        s = self.app.settings
        return source_url(s.file, s.config_where)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def render(self, request: Request, title: str, active: str, body: Iterable[str], *,
               status: int = 200, refresh: int | None = None) -> HTMLResponse:  # fmt: skip
        html = page.page(title, active, self.service_url(request), body, refresh=refresh)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def notice(text: str, kind: str = "ok") -> str:
    role = ' role="alert"' if kind == "error" else ' role="status"'
    return f'<div class="notice {kind}"{role}>{page.e(text)}</div>'
