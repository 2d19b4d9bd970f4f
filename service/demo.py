"""`r2sf demo`: the product on an embedded PostgreSQL, from a fresh clone, in under a minute.

Starts a private PostgreSQL (pgserver; data under `.r2sf/`, reused next time), fills schema
`warehouse` with deterministic TICKIT-like data, runs the demo's sync jobs and serves OData,
all through the product's own config loader, sync engine and `r2sf serve` path. It must never
leave a process running: every exit path stops the server and the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import asyncpg

from service.config import ConfigError, load_settings

DEMO_VERSION = 1  # bump when demo/warehouse.sql changes, so old data is rebuilt
DEFAULT_ROWS = 100_000
DEFAULT_PORT = 8000
STATE_DIR = ".r2sf"
DATABASE = "r2sf_demo"
USER = "demo"
DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


class Stopped(BaseException):
    """SIGTERM, turned into an exception so that every `finally` runs (like Ctrl-C)."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="try r2sf: embedded PostgreSQL, demo data, sync and OData on localhost"
    )
    demo.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        help=f"sales rows in the demo warehouse (default {DEFAULT_ROWS:,})",
    )
    demo.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8000)")
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.rows < 1:
        raise ConfigError("--rows", f"{args.rows} is not a row count", "use 1 or more")
    if not _port_free(args.port):
        print(
            f"r2sf demo: port {args.port} on 127.0.0.1 is in use (another demo?);"
            " stop that process or pass --port",
            file=sys.stderr,
        )
        return 1
    config = Path(args.config) if args.config else DEMO_DIR / "r2sf.toml"
    if not config.exists():
        raise ConfigError(str(config), "the demo configuration is missing", "run from a checkout")
    state = Path.cwd() / STATE_DIR
    state.mkdir(exist_ok=True)
    password = _password(state)
    out = sys.stdout

    previous = signal.signal(signal.SIGTERM, _stop)
    server = None
    try:
        _say(out, f"starting the embedded PostgreSQL in {STATE_DIR}/pgdata ...")
        server = _start_postgres(state / "pgdata")
        admin_url = server.get_uri()
        url = server.get_uri(database=DATABASE)
        # The product reads these, exactly as on Heroku; the warehouse is a schema of the
        # same database here, so the source and the target URL are the same.
        os.environ["DATABASE_URL"] = url
        os.environ["REDSHIFT_URL"] = url
        os.environ["ODATA_CREDENTIALS"] = f"{USER}:{password}"
        asyncio.run(_prepare_warehouse(admin_url, url, args.rows, out))
        with (state / "sync.log").open("a", encoding="utf-8") as log:
            code = asyncio.run(_sync(config, out, log))
        if code != 0:
            return code
        _announce_when_ready(args.port, password, started, out)
        # Exactly `r2sf --config demo/r2sf.toml serve ...`: the function that command calls.
        from service.serve import serve

        return serve(str(config), host="127.0.0.1", port=args.port, workers=1)
    except (KeyboardInterrupt, Stopped):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            _say(out, "stopping the embedded PostgreSQL ...")
            server.cleanup()
            _say(out, f"stopped; the data stays in {STATE_DIR}/ for the next `make demo`")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped()


def _say(out: TextIO, line: str) -> None:
    print(f"r2sf demo: {line}", file=out, flush=True)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _password(state: Path) -> str:
    """The demo password: generated once, kept so the copied curl commands keep working."""
    path = state / "demo-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


def _start_postgres(datadir: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        from pgserver import postgres_server

        return postgres_server.get_server(datadir, cleanup_mode="stop")


async def _prepare_warehouse(admin_url: str, url: str, rows: int, out: TextIO) -> None:
    """Create the demo database and its warehouse data, unless the same data is already there."""
    admin = await asyncpg.connect(admin_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if exists and await _current(url) == (rows, DEMO_VERSION):
            _say(out, f"reusing the demo warehouse ({rows:,} sales rows)")
            return
        if exists:  # other --rows or an older demo: start over, sync history included
            await admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    _say(out, f"generating the demo warehouse ({rows:,} sales rows) ...")
    sql = (DEMO_DIR / "warehouse.sql").read_text(encoding="utf-8")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT set_config('r2sf.demo_rows', $1, false)", str(rows))
        await conn.execute("SELECT set_config('r2sf.demo_version', $1, false)", str(DEMO_VERSION))
        await conn.execute(sql)
        await conn.execute((DEMO_DIR / "targets.sql").read_text(encoding="utf-8"))
    finally:
        await conn.close()


async def _current(url: str) -> tuple[int, int] | None:
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT to_regclass('warehouse.demo_info') IS NOT NULL"):
            return None
        row = await conn.fetchrow("SELECT rows, version FROM warehouse.demo_info")
        return None if row is None else (row["rows"], row["version"])
    finally:
        await conn.close()


async def _sync(config: Path, out: TextIO, log: TextIO) -> int:
    """Run every configured job once through the sync engine, as `r2sf sync` would."""
    from sync.config import load_jobs, source_url
    from sync.engine import run_job
    from sync.errors import SyncError
    from sync.progress import Reporter

    settings = load_settings(str(config))
    jobs = load_jobs(settings.file, config)
    source = source_url(settings.file, config)
    reporter = Reporter(stream=log, tty=False)
    for job in jobs:
        try:
            r = await run_job(
                job, target_url=settings.database_url, source_url=source, reporter=reporter
            )
        except SyncError as exc:
            print(f"r2sf demo: sync failed: {exc}", file=sys.stderr)
            return 1
        _say(
            out,
            f"synced {job.name} -> {job.target}: read {r.rows_read:,}, inserted {r.inserted:,},"
            f" updated {r.updated:,}, deleted {r.deleted:,}, unchanged {r.unchanged:,}"
            f" ({r.seconds:.1f} s)",
        )
    return 0


def banner(port: int, password: str, seconds: float) -> str:
    base = f"http://127.0.0.1:{port}"
    root = f"{base}/odata/v4"
    auth = f"'{USER}:{password}'"
    return "\n".join(
        [
            "",
            f"r2sf demo is ready ({seconds:.1f} s). Salesforce would read it at:",
            "",
            f"  OData service root: {root}",
            f"  Status page:        {base}/",
            f"  User / password:    {USER} / {password}",
            "",
            "Try:",
            f"  curl -u {auth} '{root}/$metadata'",
            f"  curl -u {auth} '{root}/Category?$filter=catgroup%20eq%20%27Concerts%27"
            "&$select=catid,catname'",
            f"  curl -u {auth} '{root}/SalesByEventMonth?$filter=eventid%20eq%20100"
            "&$orderby=month&$count=true'",
            "",
            "Operator commands against the demo (from another terminal):",
            f"  export DATABASE_URL='{os.environ.get('DATABASE_URL', '')}'"
            f" REDSHIFT_URL=\"$DATABASE_URL\" R2SF_CONFIG='{DEMO_DIR / 'r2sf.toml'}'",
            "  .venv/bin/r2sf status; .venv/bin/r2sf check; .venv/bin/r2sf sync",
            "",
            f"Press Ctrl-C to stop. The data stays in {STATE_DIR}/ for next time.",
            "",
        ]
    )


def _announce_when_ready(port: int, password: str, started: float, out: TextIO) -> None:
    """Print the banner once the server answers, from a thread (serving blocks the main one)."""

    def wait() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    pass
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
                continue
            print(banner(port, password, time.monotonic() - started), file=out, flush=True)
            return

    threading.Thread(target=wait, name="r2sf-demo-banner", daemon=True).start()
