"""The console at /admin: sync jobs, exposed sets and history, edited in the browser.

Every page is server-rendered HTML (service/admin/page.py); every change goes through the
stored configuration (service/config_store.py), validated like r2sf.toml and kept with who saved
it. Authentication happened before a request gets here (service/admin/security.py); each POST
is checked for its CSRF token. Secrets are never rendered: URLs stay in config vars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from service.app import App


def console_router(app: App) -> APIRouter:
    from service.admin import history, jobs, sets
    from service.admin.context import Console

    console = Console(app)
    router = APIRouter()
    jobs.routes(router, console)
    sets.routes(router, console)
    history.routes(router, console)
    return router
