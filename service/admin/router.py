"""The console's routes, gathered for the app (service/app.py includes them)."""

from __future__ import annotations

from fastapi import APIRouter

from service.admin import history, jobs, sets
from service.admin.context import App, Console


def console_router(app: App) -> APIRouter:
    console = Console(app)
    router = APIRouter()
    jobs.routes(router, console)
    sets.routes(router, console)
    history.routes(router, console)
    return router
