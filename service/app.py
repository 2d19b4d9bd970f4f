"""The ASGI application: lifecycle and routing; OData straight to its pipeline, the rest to FastAPI.

OData requests bypass FastAPI's routing and dependency machinery (they are the hot path); the
status page is an ordinary FastAPI route. Each request becomes a `RequestContext` once
(service/types.py) and is answered through the cache layer (service/caching.py), HTTP framing
(service/http.py) and the one error renderer (service/errors.py); /metrics gauges are read by
service/metrics.py. What stays here: start-up and shutdown, the refusals, authentication
(checked once per request), the 414 limit and the dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable

import asyncpg
from fastapi import FastAPI

from odata import response
from odata.errors import CatalogError, Forbidden, ODataError, Unauthorized, UriTooLong
from odata.service import ODataService
from odata.versions import VersionTracker
from service import database, errors, http, logs, metrics
from service.admin.security import ConsoleGate
from service.auth import BasicAuth
from service.caching import CacheLayer, Outcome
from service.config import ConfigError, Settings, load_settings, redact_url, service_config
from service.metrics import Metrics
from service.security import refuse_plain_http
from service.status import status_router
from service.types import Receive, RequestContext, Scope, Send

log = logging.getLogger("r2sf.service")

MAX_TARGET = 32 * 1024  # request targets above this answer 414 (Salesforce IN chains are long)
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PRUNE_SECONDS = 600  # how often the change log is pruned and its size read
PRUNE_LOCK = (0x72327366 & 0x7FFFFFFF, 3)  # advisory lock: "r2sf", change-log pruning
CONFIG_POLL_SECONDS = 2.0  # how soon a configuration saved in the console is served


class App:
    """The whole service as one ASGI callable."""

    def __init__(self, settings: Settings, *, allow_anonymous: bool = False) -> None:
        if not settings.credentials and not allow_anonymous:
            raise ConfigError(
                "ODATA_CREDENTIALS",
                "no credentials are configured, so anyone could read the data",
                "set ODATA_CREDENTIALS=user:password, or pass --allow-anonymous for a local trial",
            )
        self.settings = settings
        self.root = settings.odata.path
        self.auth = BasicAuth(settings.credentials)
        self.pool: asyncpg.Pool | None = None  # the primary (through the pooler if any)
        self.read_pool: asyncpg.Pool | None = None  # the follower, else the same as `pool`
        self.odata: ODataService | None = None
        self.tracker: VersionTracker | None = None
        server = settings.file.server
        self.caching = CacheLayer(server.cache_mb, server.cache_min_uses)
        self.cache = self.caching.cache  # the entries (odata/cache.py), or None when off
        self.metrics = Metrics()
        self.csrf_token = _csrf_token(settings)
        self.console = ConsoleGate(settings)
        self.file_settings = settings  # before the stored configuration is applied
        self.config_version = 0  # the stored configuration version being served (0: the file)
        self._id_prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self.api = self._build_api()
        self._tasks: list[asyncio.Task[None]] = []
        self.change_log: dict[str, int] = {}  # table -> rows in r2sf.changes, refreshed by pruning

    # -- lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        s = self.settings
        timeout = s.file.server.statement_timeout_s
        self.pool = await _create_pool(
            s.write_url,
            "DATABASE_CONNECTION_POOL_URL" if s.pool_url else "DATABASE_URL",
            pooled=s.pool_url is not None,
            size=s.file.server.pool_size,
            statement_timeout_s=timeout,
        )
        self.read_pool = self.pool
        if s.follower_url is not None:
            self.read_pool = await _create_pool(
                s.follower_url,
                "DATABASE_FOLLOWER_URL",
                pooled=False,
                size=s.file.server.pool_size,
                statement_timeout_s=timeout,
            )
        # The listener needs a session of its own on the primary: never the pooler (transaction
        # mode keeps no LISTEN), never a follower (it receives no NOTIFY). With a follower it
        # runs even when the cache is off: reads compare its versions with the follower's.
        await _migrate(self.pool)
        await self._apply_stored_config()
        s = self.settings
        if self.cache is not None or s.follower_url is not None:
            self.tracker = VersionTracker(s.database_url, install=s.odata.track_changes)
        self.odata = ODataService(
            self.pool, service_config(s), self.tracker, read_pool=self.read_pool
        )
        try:
            await self.odata.reload()
        except CatalogError as exc:
            raise ConfigError(str(s.config_path or "r2sf.toml"), str(exc), "edit [odata]") from None
        loop = asyncio.get_running_loop()
        # Not possible outside the main thread (tests): reload() can still be called directly.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        every = self.settings.odata.reload_seconds
        if every > 0:
            self._spawn(self._reload_every(every))
        self._spawn(self._prune_changes_every(PRUNE_SECONDS))
        self._spawn(self._watch_config_every(CONFIG_POLL_SECONDS))

    async def _apply_stored_config(self) -> bool:
        """Serve the newest stored configuration; True when it changed. A version that no
        longer validates is logged and the previous configuration kept."""
        from service import config_store
        from sync import stored_config

        assert self.pool is not None
        async with self.pool.acquire() as conn:
            if await stored_config.latest_id(conn) == self.config_version:
                return False
            try:
                settings, version = await config_store.effective(conn, self.file_settings)
            except ConfigError as exc:
                log.error("stored configuration not applied: %s", exc)
                self.config_version = await stored_config.latest_id(conn)
                return False
        self.settings, self.config_version = settings, version
        return True

    async def _watch_config_every(self, seconds: float) -> None:
        """Pick up a configuration saved in the console (by any worker or dyno)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                changed = await self._apply_stored_config()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("cannot read the stored configuration: %s", type(exc).__name__)
                continue
            if changed and self.odata is not None:
                log.info("configuration version %d applied", self.config_version)
                self.odata.config = service_config(self.settings)
                server = self.settings.file.server  # names and sets may have changed
                self.caching = CacheLayer(server.cache_mb, server.cache_min_uses)
                self.cache = self.caching.cache
                await self.reload()

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def reload(self) -> None:
        assert self.odata is not None
        try:
            await self.odata.reload()
        except Exception as exc:  # keep serving the old model; say why the new one failed
            log.error("model reload failed, keeping the previous model: %s", exc)

    async def _reload_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.reload()

    async def _prune_changes_every(self, seconds: float) -> None:
        """Drop change-log entries past the retention and refresh the log's size for /metrics."""
        from odata import changes

        while True:
            assert self.pool is not None and self.odata is not None
            if self.odata.published.relids:
                try:
                    async with self.pool.acquire() as conn:
                        # One pruner at a time across workers and dynos; transaction-scoped,
                        # so a pooler cannot leave it behind on a server connection.
                        async with conn.transaction():
                            if await conn.fetchval(
                                "SELECT pg_try_advisory_xact_lock($1, $2)", *PRUNE_LOCK
                            ):
                                await changes.prune(conn, self.settings.odata.change_retention_s)
                        self.change_log = await changes.log_size(conn)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("pruning the change log failed: %s", type(exc).__name__)
            await asyncio.sleep(seconds)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.tracker is not None:
            await self.tracker.close()
        if self.read_pool is not None and self.read_pool is not self.pool:
            await self.read_pool.close()
        if self.pool is not None:
            await self.pool.close()

    # -- ASGI ------------------------------------------------------------------------------------

    @property
    def coalesced(self) -> int:
        return self.caching.coalesced

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        ctx = RequestContext.of(scope, receive, send, self._next_request_id)
        # Every record logged while answering carries the id. uvicorn runs each request in a
        # task of its own, whose context ends with it: nothing to reset.
        logs.request_id.set(ctx.request_id)
        kind, outcome = await self._route(ctx)
        if outcome is None:  # answered by the FastAPI app
            self.metrics.observe("api", 200, time.perf_counter() - ctx.started)
            return
        if isinstance(outcome, response.Response):
            await http.send_response(ctx, outcome)
        else:
            assert self.cache is not None
            await http.send_entry(ctx, self.cache, outcome)
        self.metrics.observe(kind, outcome.status, time.perf_counter() - ctx.started)

    async def _route(self, ctx: RequestContext) -> tuple[str, Outcome]:
        """(the kind of request, for /metrics; its answer), None when FastAPI answered."""
        # Salesforce's optional CSRF protection fetches the token with a GET (spec §6).
        if ctx.headers.get("x-csrf-token", "").lower() == "fetch":
            ctx.extra["X-CSRF-Token"] = self.csrf_token
        if ctx.path == "/healthz":
            return "health", response.plain("ok")
        try:
            refuse_plain_http(ctx.headers, self.settings)  # X-Forwarded-Proto: http
            self._check_csrf(ctx)
        except ODataError as exc:
            return "refused", errors.render(exc, ctx.request_id)
        if self.console.covers(ctx.path):
            # The console's own credential (the OData one is refused) and its own CSRF tokens.
            user, refusal = self.console.admit(ctx.path, ctx.headers)
            if refusal is not None:
                return "refused", refusal
            ctx.scope.setdefault("state", {})["admin_user"] = user
            await self.api(ctx.scope, ctx.receive, ctx.send)
            return "console", None
        ctx.authorised = (
            not self.auth.enabled or self.auth.user(ctx.headers.get("authorization")) is not None
        )
        if ctx.path == "/metrics" and ctx.authorised:
            body = (await self._metrics()).encode()
            return "metrics", response.Response(200, body, METRICS_TYPE)
        key = self.caching.key(ctx)
        hit = self.caching.lookup(key, self.tracker) if key is not None else None
        if hit is not None:
            return "odata_cached", hit

        async def compute() -> Outcome:
            result = await self._dispatch(ctx)
            return None if result is None else self.caching.keep(key, result)

        if key is None or self.tracker is None or not ctx.path.startswith(self.root):
            return "odata", await compute()
        return "odata", await self.caching.coalesce(key, self.tracker, compute)

    def _next_request_id(self) -> str:
        # Unique per process start and request; cheaper than uuid4 on the hot path.
        return f"{self._id_prefix}-{next(self._ids):x}"

    def _check_csrf(self, ctx: RequestContext) -> None:
        if not self.settings.odata.csrf or ctx.method in ("GET", "HEAD", "OPTIONS"):
            return
        if self.console.covers(ctx.path):
            return  # the console's forms carry their own token (service/admin/security.py)
        sent = ctx.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token.encode()):
            raise Forbidden(
                "CSRF token missing or invalid: fetch one with a GET carrying "
                "'X-CSRF-Token: Fetch' and send it back on writes"
            )

    async def _metrics(self) -> str:
        extra = await metrics.sync_gauges(self.pool) + await metrics.follower_gauges(
            self.read_pool, self.pool, self.odata
        )
        return self.metrics.render(
            lambda: [
                *extra,
                *metrics.cache_gauges(self.caching),
                *metrics.odata_gauges(self.odata, self.change_log, self.tracker),
            ]
        )

    async def _dispatch(self, ctx: RequestContext) -> response.Response | None:
        try:
            raw_path, query = ctx.raw_path, ctx.query
            if len(raw_path) + len(query) > MAX_TARGET:
                raise UriTooLong(f"the request URL is longer than {MAX_TARGET // 1024} KB")
            if not ctx.authorised:
                raise Unauthorized(
                    "authentication required: send the user and password configured in ODATA_CREDENTIALS (HTTP Basic)"
                )
            if raw_path == self.root or raw_path.startswith(self.root + "/"):
                assert self.odata is not None
                method = ctx.method
                body = b"" if method in ("GET", "HEAD", "DELETE") else await http.read_body(ctx)
                return await self.odata.handle(
                    method,
                    raw_path[len(self.root) :],
                    query,
                    ctx.headers,
                    http.service_root(ctx.scope, ctx.headers, self.root),
                    body,
                )
        except Exception as exc:  # RecursionError included: a filter nested too deeply
            return errors.render(exc, ctx.request_id)
        await self.api(ctx.scope, ctx.receive, ctx.send)
        return None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except ConfigError as exc:
                    log.error("start-up failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _build_api(self) -> FastAPI:
        api = FastAPI(title="r2sf", docs_url=None, redoc_url=None, openapi_url=None)
        from service.admin.router import console_router

        api.include_router(status_router(self))  # the status page at / (service/status.py)
        api.include_router(console_router(self))  # the console at /admin (service/admin/)
        return api


async def _create_pool(
    url: str, variable: str, *, pooled: bool, size: int, statement_timeout_s: int
) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=size,
            reset=database.keep_session,
            **database.pool_options(
                pooled=pooled, name="r2sf-odata", statement_timeout_s=statement_timeout_s
            ),
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError(
            variable,
            f"cannot connect to {redact_url(url)} ({type(exc).__name__}: {exc})",
            "check the host, port, database name and credentials",
        ) from None


async def _migrate(pool: asyncpg.Pool) -> None:
    """Bring the r2sf schema up to date, as `r2sf migrate` does, if this role may.

    A role without the privilege still serves: against a schema its owner migrated, fully;
    without one, uncached and without change tracking (as odata/versions.py and
    odata/service.py find no tables to use).
    """
    from sync.schema import migrate

    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except asyncpg.InsufficientPrivilegeError:
        log.warning("cannot create schema r2sf (no privilege): responses are not cached")


def _csrf_token(settings: Settings) -> str:
    """One token per deployment, the same in every worker and dyno: derived from the
    credentials, so rotating them rotates it."""
    secret = "\n".join(sorted(f"{c.user}:{c.password}" for c in settings.credentials))
    return hmac.new(secret.encode(), b"r2sf csrf token", hashlib.sha256).hexdigest()


def create_app() -> App:
    """Factory for uvicorn workers: settings come from the environment `r2sf serve` prepared."""
    settings = load_settings(os.environ.get("R2SF_CONFIG") or None)
    return App(settings, allow_anonymous=os.environ.get("R2SF_ALLOW_ANONYMOUS") == "1")
