"""The ASGI application: routes OData requests straight to the OData pipeline, the rest to FastAPI.

OData requests bypass FastAPI's routing and dependency machinery (they are the hot path); health,
metrics and the status page are ordinary FastAPI routes. Authentication, request ids, gzip,
request-line limits and the last-resort error handler live here, once.
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
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
from fastapi import FastAPI

from odata import etags, response
from odata.cache import Doorkeeper, Entry, ResponseCache, etag
from odata.catalog import SetOptions
from odata.errors import (
    BadRequest,
    CatalogError,
    Forbidden,
    ODataError,
    PayloadTooLarge,
    Unauthorized,
    UriTooLong,
)
from odata.service import ODataService, ServiceConfig
from odata.versions import VersionTracker
from service import database, errors, logs
from service.auth import BasicAuth
from service.config import ConfigError, Settings, load_settings, redact_url
from service.http import service_root
from service.metrics import Metrics
from service.security import refuse_plain_http
from service.status import status_router

log = logging.getLogger("r2sf.service")

Scope = MutableMapping[str, Any]
# What a response depends on besides the data (see App._cache_key).
CacheKey = tuple[str | bytes, ...]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_TARGET = 32 * 1024  # request targets above this answer 414 (Salesforce IN chains are long)
GZIP_MIN = 1024
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY = 8 * 2**20  # Salesforce's own request limit (spec §7)
_COMPRESSIBLE = ("application/json", "application/xml", "text/")
PRUNE_SECONDS = 600  # how often the change log is pruned and its size read
PRUNE_LOCK = (0x72327366 & 0x7FFFFFFF, 3)  # advisory lock: "r2sf", change-log pruning


def service_config(settings: Settings) -> ServiceConfig:
    o = settings.odata
    return ServiceConfig(
        expose=tuple(o.expose),
        sets=tuple(
            SetOptions(
                s.table, s.name, tuple(s.key) if s.key else None, s.read_only, s.change_tracking
            )
            for s in o.sets
        ),
        page_size=o.page_size,
        case_insensitive=o.case_insensitive_match,
        max_page_bytes=o.max_page_bytes,
        unsupported_types=o.unsupported_types,
        change_tracking=o.change_tracking,
        change_retention_s=o.change_retention_s,
    )


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
        cache_mb = settings.file.server.cache_mb
        self.cache = ResponseCache(cache_mb * 2**20) if cache_mb > 0 else None
        min_uses = settings.file.server.cache_min_uses
        self.admission = Doorkeeper(min_uses) if min_uses > 1 else None
        self.coalesced = 0  # misses answered by an identical request that was already running
        self.metrics = Metrics()
        self.csrf_token = _csrf_token(settings)
        self._inflight: dict[
            CacheKey,
            tuple[int, list[asyncio.Future[response.Response | Entry | None]]],
        ] = {}
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id") or self._next_request_id()
        # Every record logged while answering carries the id. uvicorn runs each request in a
        # task of its own, whose context ends with it: nothing to reset.
        logs.request_id.set(request_id)
        path: str = scope["path"]
        method: str = scope["method"]
        kind = "odata"
        result: response.Response | None
        if path == "/healthz":
            kind, result = "health", response.plain("ok")
        elif (refused := self._refusal(method, headers, request_id)) is not None:
            kind, result = "refused", refused
        elif path == "/metrics" and self._authorised(headers):
            gauges = await self._sync_gauges() + await self._follower_gauges()
            body = self._metrics(gauges).encode()
            kind, result = "metrics", response.Response(200, body, METRICS_TYPE)
        else:
            # Only authorised reads use the cache: the key is None for everything else.
            key = (
                self._cache_key(scope, headers)
                if self.cache is not None
                and method in ("GET", "HEAD")
                and "track-changes" not in headers.get("prefer", "")  # a fresh snapshot each time
                and self._authorised(headers)
                else None
            )
            hit = self._cached(key) if key is not None else None
            if hit is not None:
                assert self.cache is not None
                await _send_cached(
                    send, self.cache, hit, request_id, headers, method, self._extra(headers)
                )
                self.metrics.observe("odata_cached", hit.status, time.perf_counter() - started)
                return
            outcome = await self._answer(scope, receive, send, headers, request_id, key)
            if outcome is None:  # answered by the FastAPI app
                self.metrics.observe("api", 200, time.perf_counter() - started)
                return
            if isinstance(outcome, Entry):
                assert self.cache is not None
                await _send_cached(
                    send, self.cache, outcome, request_id, headers, method, self._extra(headers)
                )
                self.metrics.observe(kind, outcome.status, time.perf_counter() - started)
                return
            result = outcome
        await _send(send, result, request_id, headers, method, self._extra(headers))
        self.metrics.observe(kind, result.status, time.perf_counter() - started)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        request_id: str,
        key: CacheKey | None,
    ) -> response.Response | Entry | None:
        """Run the request; cacheable answers come back as cache entries.

        Identical requests that arrive while one is being computed wait for it instead of
        running the same query again (after a data change, a busy list view would otherwise
        send one exact count per waiting request). A request joins only if no change
        notification arrived since the running one started, so it gets no older data than it
        would have computed itself.
        """
        # `key` is None unless this is an authorised read: a waiter must be allowed to see what
        # it joins.
        if key is None or self.tracker is None or not scope["path"].startswith(self.root):
            return await self._compute(scope, receive, send, headers, request_id, key)
        running = self._inflight.get(key)
        if running is not None and running[0] == self.tracker.changes:
            # Join: wait on a future of our own, resolved by the running request.
            joined: asyncio.Future[response.Response | Entry | None] = (
                asyncio.get_running_loop().create_future()
            )
            running[1].append(joined)
            shared = await joined
            if shared is not None:
                self.coalesced += 1
                return shared
            return await self._compute(scope, receive, send, headers, request_id, key)
        # Lead: nothing is allocated for waiters unless one actually joins.
        mine: tuple[int, list[asyncio.Future[response.Response | Entry | None]]] = (
            self.tracker.changes,
            [],
        )
        self._inflight[key] = mine
        outcome: response.Response | Entry | None = None
        try:
            outcome = await self._compute(scope, receive, send, headers, request_id, key)
            return outcome
        finally:
            if self._inflight.get(key) is mine:
                del self._inflight[key]
            # Waiters get the outcome, or None (compute it yourselves) if this one failed.
            for waiter in mine[1]:
                if not waiter.done():
                    waiter.set_result(outcome)

    async def _compute(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        request_id: str,
        key: CacheKey | None,
    ) -> response.Response | Entry | None:
        result = await self._dispatch(scope, receive, send, headers, request_id)
        if result is None:
            return None
        if key is not None and result.version is not None and result.status == 200:
            return self._store(key, result)
        return result

    def _next_request_id(self) -> str:
        # Unique per process start and request; cheaper than uuid4 on the hot path.
        return f"{self._id_prefix}-{next(self._ids):x}"

    def _extra(self, headers: dict[str, str]) -> dict[str, str]:
        # Salesforce's optional CSRF protection fetches the token with a GET (spec §6).
        if headers.get("x-csrf-token", "").lower() == "fetch":
            return {"X-CSRF-Token": self.csrf_token}
        return {}

    def _refusal(
        self, method: str, headers: dict[str, str], request_id: str
    ) -> response.Response | None:
        """The answer to a request refused before authentication, or None to go on."""
        try:
            refuse_plain_http(headers, self.settings)  # X-Forwarded-Proto: http
            self._check_csrf(method, headers)
        except ODataError as exc:
            return errors.render(exc, request_id)
        return None

    def _check_csrf(self, method: str, headers: dict[str, str]) -> None:
        if not self.settings.odata.csrf or method in ("GET", "HEAD", "OPTIONS"):
            return
        sent = headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token.encode()):
            raise Forbidden(
                "CSRF token missing or invalid: fetch one with a GET carrying "
                "'X-CSRF-Token: Fetch' and send it back on writes"
            )

    def _authorised(self, headers: dict[str, str]) -> bool:
        return not self.auth.enabled or self.auth.user(headers.get("authorization")) is not None

    @staticmethod
    def _cache_key(scope: Scope, headers: dict[str, str]) -> CacheKey:
        # Everything the response depends on besides the data: path, query, format, and the
        # scheme and host that go into @odata.context and nextLinks.
        return (
            scope.get("raw_path") or scope["path"],
            scope.get("query_string", b""),
            headers.get("accept", ""),
            headers.get("odata-maxversion", ""),
            headers.get("x-forwarded-proto", ""),
            headers.get("x-forwarded-host", ""),
            headers.get("host", ""),
        )

    def _cached(self, key: CacheKey) -> Entry | None:
        if self.cache is None or self.tracker is None:
            return None
        return self.cache.lookup(key, self.tracker.version)

    def _store(self, key: CacheKey, result: response.Response) -> Entry:
        assert self.cache is not None and result.version is not None and result.entity_set
        entry = Entry(
            result.status,
            result.body,
            result.content_type,
            result.entity_set,
            result.version,
            # A single entity carries its own ETag (a hash of its row): it changes when that
            # entity does, not with every write to the table.
            result.headers.get("ETag") or etag(result.version, result.body),
            key,
        )
        # Admission (like nginx's proxy_cache_min_uses): keep an answer once its URL has been
        # asked `cache_min_uses` times under this data version, or at once when the URL's
        # entry from an earlier version is still there. Salesforce repeats its list-view URLs
        # constantly, and they are kept again right after a change; one-off queries, and URLs
        # asked less often than the data changes, would only churn memory and never be hit.
        # The answer is sent from the entry either way, with its ETag.
        if (
            self.admission is None
            or key in self.cache
            or self.admission.admit((key, result.version))
        ):
            self.cache.put(entry)
        return entry

    async def _sync_gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        """The sync jobs' last success and failure, from r2sf.sync_runs (nothing on error)."""
        from service.status import sync_gauges

        if self.pool is None:
            return []
        try:
            async with self.pool.acquire(timeout=5) as conn:
                return await asyncio.wait_for(sync_gauges(conn), 5)
        except Exception as exc:
            log.warning("metrics: cannot read the sync runs: %s", exc)
            return []

    async def _follower_gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        """Replay lag of the follower and how often reads fell back to the primary."""
        if self.read_pool is None or self.read_pool is self.pool or self.odata is None:
            return []
        out: list[tuple[str, str, dict[str, str], float]] = [
            (
                "r2sf_follower_fallbacks_total",
                "Reads answered by the primary because the follower had not replayed the"
                " current data version.",
                {},
                self.odata.follower_fallbacks,
            )
        ]
        try:
            lag = await asyncio.wait_for(database.replay_lag(self.read_pool), 5)
        except Exception as exc:
            log.warning("metrics: cannot read the follower's replay lag: %s", exc)
            return out
        if lag is not None:
            out += [
                (
                    "r2sf_follower_replay_lag_seconds",
                    "Age of the last transaction the follower replayed, while it has WAL to"
                    " replay (0 when caught up).",
                    {},
                    lag[0],
                ),
                (
                    "r2sf_follower_replay_lag_bytes",
                    "WAL the follower received but has not replayed yet.",
                    {},
                    lag[1],
                ),
            ]
        return out

    def _metrics(self, extra: list[tuple[str, str, dict[str, str], float]] | None = None) -> str:
        def gauges() -> list[tuple[str, str, dict[str, str], float]]:
            out: list[tuple[str, str, dict[str, str], float]] = list(extra or [])
            if self.cache is not None:
                out += [
                    (
                        "r2sf_cache_hits_total",
                        "Responses served from the cache.",
                        {},
                        self.cache.hits,
                    ),
                    (
                        "r2sf_cache_misses_total",
                        "Cacheable requests not in the cache.",
                        {},
                        self.cache.misses,
                    ),
                    (
                        "r2sf_cache_coalesced_total",
                        "Misses answered by an identical request already being computed.",
                        {},
                        self.coalesced,
                    ),
                    (
                        "r2sf_cache_evictions_total",
                        "Entries evicted to stay in budget.",
                        {},
                        self.cache.evictions,
                    ),
                    ("r2sf_cache_bytes", "Bytes held by the response cache.", {}, self.cache.bytes),
                    ("r2sf_cache_entries", "Entries in the response cache.", {}, len(self.cache)),
                ]
            if self.odata is not None:
                counts = self.odata.counts
                out += [
                    (
                        "r2sf_count_cache_hits_total",
                        "Counts answered from memory.",
                        {},
                        counts.hits,
                    ),
                    (
                        "r2sf_count_cache_misses_total",
                        "Counts computed by PostgreSQL.",
                        {},
                        counts.misses,
                    ),
                ]
            for table, rows in sorted(self.change_log.items()):
                out.append(
                    (
                        "r2sf_change_log_rows",
                        "Changes kept for delta links per tracked table (as of the last pruning).",
                        {"table": table},
                        rows,
                    )
                )
            if self.tracker is not None:
                out.append(
                    (
                        "r2sf_listening",
                        "1 while change notifications arrive.",
                        {},
                        int(self.tracker.listening),
                    )
                )
                for name in sorted(self.tracker.depends):
                    version = self.tracker.version(name)
                    if version is not None:
                        out.append(
                            (
                                "r2sf_data_version",
                                "Current data version per entity set.",
                                {"entity_set": name},
                                version,
                            )
                        )
            return out

        return self.metrics.render(gauges)

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
    ) -> response.Response | None:
        try:
            raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
            query = scope.get("query_string", b"").decode("latin-1")
            if len(raw_path) + len(query) > MAX_TARGET:
                raise UriTooLong(f"the request URL is longer than {MAX_TARGET // 1024} KB")
            if self.auth.enabled and self.auth.user(headers.get("authorization")) is None:
                raise Unauthorized(
                    "authentication required: send the user and password configured in ODATA_CREDENTIALS (HTTP Basic)"
                )
            if raw_path == self.root or raw_path.startswith(self.root + "/"):
                assert self.odata is not None
                method = scope["method"]
                body = (
                    b""
                    if method in ("GET", "HEAD", "DELETE")
                    else await _read_body(receive, headers)
                )
                return await self.odata.handle(
                    method,
                    raw_path[len(self.root) :],
                    query,
                    headers,
                    service_root(scope, headers, self.root),
                    body,
                )
        except Exception as exc:  # RecursionError included: a filter nested too deeply
            return errors.render(exc, request_id)
        await self.api(scope, receive, send)
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
        api.include_router(status_router(self))  # the status page at / (service/status.py)
        return api


async def _read_body(receive: Receive, headers: dict[str, str]) -> bytes:
    """The request body, gunzipped when Salesforce's "Compress Requests" is on (spec §6)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY // 2**20} MB")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(31)
            body = inflater.decompress(body, MAX_BODY + 1)
        except zlib.error:
            raise BadRequest("the request body is not valid gzip") from None
        if len(body) > MAX_BODY or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY // 2**20} MB")
    return body


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


async def _send(
    send: Send,
    resp: response.Response,
    request_id: str,
    headers: dict[str, str],
    method: str,
    extra: dict[str, str],
) -> None:
    body = resp.body
    out: list[tuple[bytes, bytes]] = [
        (b"odata-version", response.ODATA_VERSION.encode()),
        (b"x-request-id", request_id.encode("latin-1", "replace")),
    ]
    tag = resp.headers.get("ETag")
    if (
        tag is not None
        and resp.status == 200
        and method in ("GET", "HEAD")
        and etags.matches(headers.get("if-none-match"), tag)
    ):
        out += [(b"etag", tag.encode())]
        out += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": 304, "headers": out})
        await send({"type": "http.response.body", "body": b""})
        return
    if resp.content_type:
        out.append((b"content-type", resp.content_type.encode()))
        if (
            len(body) >= GZIP_MIN
            and resp.content_type.startswith(_COMPRESSIBLE)
            and "gzip" in headers.get("accept-encoding", "")
        ):
            compressor = zlib.compressobj(5, zlib.DEFLATED, 31)
            body = compressor.compress(body) + compressor.flush()
            out.append((b"content-encoding", b"gzip"))
            out.append((b"vary", b"Accept-Encoding"))
    for name, value in (*resp.headers.items(), *extra.items()):
        out.append((name.lower().encode(), value.encode("latin-1", "replace")))
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": resp.status, "headers": out})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _send_cached(
    send: Send,
    cache: ResponseCache,
    entry: Entry,
    request_id: str,
    headers: dict[str, str],
    method: str,
    extra: dict[str, str],
) -> None:
    out: list[tuple[bytes, bytes]] = [
        (b"odata-version", response.ODATA_VERSION.encode()),
        (b"x-request-id", request_id.encode("latin-1", "replace")),
        (b"etag", entry.etag.encode()),
    ]
    out += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
    # If-None-Match uses weak comparison (RFC 9110 §13.1.2).
    if etags.matches(headers.get("if-none-match"), entry.etag):
        await send({"type": "http.response.start", "status": 304, "headers": out})
        await send({"type": "http.response.body", "body": b""})
        return
    body = entry.body
    if entry.content_type:
        out.append((b"content-type", entry.content_type.encode()))
        if len(body) >= GZIP_MIN and "gzip" in headers.get("accept-encoding", ""):
            body = cache.gzipped(entry)
            out += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": entry.status, "headers": out})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _csrf_token(settings: Settings) -> str:
    """One token per deployment, the same in every worker and dyno: derived from the
    credentials, so rotating them rotates it."""
    secret = "\n".join(sorted(f"{c.user}:{c.password}" for c in settings.credentials))
    return hmac.new(secret.encode(), b"r2sf csrf token", hashlib.sha256).hexdigest()


def create_app() -> App:
    """Factory for uvicorn workers: settings come from the environment `r2sf serve` prepared."""
    settings = load_settings(os.environ.get("R2SF_CONFIG") or None)
    return App(settings, allow_anonymous=os.environ.get("R2SF_ALLOW_ANONYMOUS") == "1")
