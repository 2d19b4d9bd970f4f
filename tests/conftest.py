"""Test database: the server in TEST_DATABASE_URL, or a private embedded one (pgserver).

Each test module that needs data gets its own database on that server, created from scratch and
dropped afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest


def _server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    datadir = tempfile.mkdtemp(prefix="r2sf-pg-")
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of a database on the test server that tests may connect to for admin work."""
    yield from _server_url()


def _with_database(url: str, name: str) -> str:
    """Replace the database name in a postgresql:// URL (keeping host, user and query)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Databases:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def create(self, setup_sql: str | None = None) -> str:
        name = "r2sf_t_" + uuid.uuid4().hex[:12]
        asyncio.run(_admin(self.server_url, f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        url = _with_database(self.server_url, name)
        if setup_sql:
            asyncio.run(_admin(url, setup_sql))
        return url

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(_admin(self.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()


@pytest.fixture(scope="session")
def databases(server_url: str) -> Iterator[Databases]:
    dbs = Databases(server_url)
    yield dbs
    dbs.drop_all()


@pytest.fixture
def fresh_db(databases: Databases) -> str:
    """URL of a new, empty database for one test."""
    return databases.create()


# A test schema served over real HTTP, once per module: the module's own `SETUP` (SQL) and
# `TOML` when it defines them, else the spec §10 schema (tests/odata_schema.py).


@pytest.fixture(scope="module")
def db(databases: Databases, request: pytest.FixtureRequest) -> str:
    from tests.odata_schema import SETUP_SQL

    return databases.create(getattr(request.module, "SETUP", SETUP_SQL))


@pytest.fixture(scope="module")
def server(db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.live import serve
    from tests.odata_schema import TOML

    with serve(db, getattr(request.module, "TOML", TOML)) as (base, _app):
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[Any]:
    import httpx

    with httpx.Client(base_url=server + "/odata/v4", auth=("sf", "secret"), timeout=60) as c:
        yield c


def run(coro: Any) -> Any:
    """Run a coroutine to completion from a synchronous test."""
    return asyncio.run(coro)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the OASIS ABNF test case counts per rule (see tests/abnf_report.py)."""
    from tests.abnf_report import summary_lines

    lines = summary_lines()
    if lines:
        terminalreporter.section("OData ABNF test cases per rule")
        for line in lines:
            terminalreporter.write_line(line)
