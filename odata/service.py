"""The OData request pipeline: request -> plan -> SQL -> one round trip -> response.

`ODataService.handle` takes the pieces of an HTTP request and returns a `Response`; it owns the
model (reloadable) and runs statements on an asyncpg pool. Every failure leaves as an
`ODataError`; database faults are classified here and never shown to the client as SQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

import asyncpg

from odata import changes, csdl, etags, response, sql, violations, write
from odata.cache import CountCache, Lru
from odata.catalog import SetOptions, load_model
from odata.errors import (
    BadRequest,
    EntityNotFound,
    Gone,
    InvalidBody,
    InvalidQueryOption,
    MethodNotAllowed,
    ODataError,
    PreconditionFailed,
    ResourceNotFound,
    ServiceError,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from odata.model import EntitySet, Model
from odata.plan import (
    MAX_PAGE_BYTES,
    CollectionPlan,
    CountPlan,
    EntityPlan,
    Lit,
    QueryPlan,
    Settings,
    encode_token,
    plan,
    resolve_key,
    resource_key_text,
)
from odata.request import (
    Format,
    ODataRequest,
    QueryOptions,
    Resource,
    check_max_version,
    negotiate,
    parse_path,
    parse_query,
)
from odata.versions import VersionTracker

log = logging.getLogger("r2sf.odata")

READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class ServiceConfig:
    expose: tuple[str, ...] = ("public.*",)
    sets: tuple[SetOptions, ...] = ()
    page_size: int = 1000
    case_insensitive: bool = True
    max_page_bytes: int = MAX_PAGE_BYTES
    unsupported_types: Literal["string", "omit"] = "string"
    change_tracking: bool = False  # the default of every table's [[odata.sets]] change_tracking
    change_retention_s: int = 7 * 86400


# Prefer values that ask for change tracking: OData 4.0 and 4.01 (§8.2.8.7).
TRACK_PREFERENCES = ("odata.track-changes", "track-changes")
# A custom query option (URL Conventions §5.2) on the nextLinks of a tracked read: the signed
# delta token of its first page, which the last page turns into the deltaLink.
TRACK_OPTION = "r2sf-track"
# Delta reads retry a database fault inside the request: an error answer stops Salesforce's
# polling until an admin restarts it.
DELTA_RETRIES = (0.2, 0.5, 1.0, 2.0)
# A write PostgreSQL cancelled to break a deadlock (40P01) or a serialization conflict (40001)
# left nothing behind (one statement, its own transaction), so it runs again after these
# pauses before the client is told to retry. Such conflicts come from a sync run writing the
# same table: it holds the table's data-version row while it writes rows, and this write's
# trigger takes the row it changed, then the data-version row (sync/fingerprint.hold_version).
WRITE_RETRIES = (0.05, 0.2, 0.5)
_CONTENDED = frozenset({"40P01", "40001"})


def track_preference(prefer: str) -> str | None:
    """The track-changes preference as the client wrote it, or None."""
    for item in prefer.split(","):
        name = item.split(";")[0].strip().lower()
        if name in TRACK_PREFERENCES:
            return name
    return None


@dataclass(frozen=True)
class Published:
    """A model and its pre-rendered documents, swapped atomically on reload."""

    model: Model
    metadata_xml: bytes
    metadata_json: bytes
    relids: dict[str, int]  # tracked entity set -> table oid


class ODataService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: ServiceConfig,
        tracker: VersionTracker | None = None,
        *,
        read_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.pool = pool  # the primary: writes, catalogue, change tracking
        self.read_pool = read_pool or pool  # a follower, or the primary again
        self.follower_fallbacks = 0  # reads the primary answered: the follower was behind
        self.config = config
        self.tracker = tracker
        self.counts = CountCache()
        # Parsed and checked requests by URL and format: Salesforce repeats the same URLs, and
        # parsing and planning cost as much CPU as the rest of a request.
        self._plans: Lru[tuple[str | None, ...], tuple[ODataRequest, QueryPlan]] = Lru(2048)
        self.settings = Settings(
            page_size=config.page_size,
            case_insensitive=config.case_insensitive,
            max_page_bytes=config.max_page_bytes,
        )
        self._published: Published | None = None
        self.tokens: changes.Tokens | None = None

    @property
    def published(self) -> Published:
        if self._published is None:
            raise ServiceUnavailable("the service is starting: the model is not loaded yet")
        return self._published

    async def reload(self) -> Model:
        async with self.pool.acquire() as conn:
            model = await load_model(
                conn,
                expose=self.config.expose,
                sets=self.config.sets,
                unsupported_types=self.config.unsupported_types,
                change_tracking=self.config.change_tracking,
            )
            relids = await self._track(conn, model)
        if self.tracker is not None:
            await self.tracker.start(model.entity_sets)
        self._published = Published(
            model, csdl.metadata_xml(model), csdl.metadata_json(model), relids
        )
        self._plans.clear()  # plans name the old model's sets and columns
        log.info("model loaded: %d entity sets", len(model.entity_sets))
        return model

    async def handle(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        service_root: str,
        body: bytes = b"",
    ) -> response.Response:
        """`path` is below the service root (still percent-encoded); `service_root` is the
        absolute URL of the root, ending in `/`."""
        key = (path, query_string, headers.get("accept"), headers.get("odata-maxversion"))
        # Delta tokens make every URL new: planning them again is cheaper than evicting plans.
        delta = "deltatoken" in query_string.lower()
        planned = self._plans.get(key) if method in READ_METHODS and not delta else None
        if planned is None:
            max_version = check_max_version(headers.get("odata-maxversion"))
            resource = parse_path(path)
            options = parse_query(query_string)
            fmt = negotiate(resource, headers.get("accept"), options.raw.get("format"), max_version)
            if method == "POST" and headers.get("x-http-method", "").upper() in ("MERGE", "PATCH"):
                method = "PATCH"  # tunnelled update (spec §6)
            if method == "MERGE":
                method = "PATCH"
            published = self.published
            if method not in READ_METHODS:
                return await self._write(method, resource, fmt, headers, body, service_root)
            if resource.kind == "service":
                doc = csdl.service_document(published.model, service_root + "$metadata")
                body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
                return response.Response(200, body, response.json_type(fmt))
            if resource.kind == "metadata":
                if fmt.csdl_json:
                    # An OData 4.01 format: said so, unless the client allows only 4.0 (the
                    # answer's version must not exceed OData-MaxVersion) and asked regardless.
                    labelled = {"OData-Version": response.ODATA_VERSION_401}
                    extra = labelled if max_version >= (4, 1) else {}
                    return response.Response(
                        200, published.metadata_json, "application/json", extra
                    )
                return response.Response(200, published.metadata_xml, response.XML)
            request = ODataRequest(resource, options, fmt)
            planned = (request, plan(request, published.model, self.settings))
            if not delta:
                self._plans.put(key, planned)
        request, query_plan = planned
        options, fmt = request.options, request.format
        if options.deltatoken is not None:
            if not isinstance(query_plan, CollectionPlan):
                raise InvalidQueryOption(
                    "$deltatoken applies to an entity set, as in the delta link given",
                    target="$deltatoken",
                )
            out = sql.OutputFormat(ieee754=fmt.ieee754, full=fmt.metadata == "full")
            return await self._delta(request, query_plan, out, service_root)
        tracking = self._tracking(query_plan, headers.get("prefer", ""), query_string)
        # Read the version before the query: a change committed meanwhile makes the result
        # newer than its version, never older, so a cached copy is never stale.
        version = self.version_of(query_plan.entity_set.name)
        # Tracking reads take their snapshot on the primary, where the change log is written.
        reader = self.pool if tracking is not None else await self.reader(query_plan.entity_set)
        out = sql.OutputFormat(ieee754=fmt.ieee754, full=fmt.metadata == "full")
        if isinstance(query_plan, CountPlan):
            result = response.plain(str(await self._count(query_plan, options, version, reader)))
        elif isinstance(query_plan, EntityPlan):
            result = await self._entity(request, query_plan, out, service_root, reader)
        else:
            result = await self._collection(
                request, query_plan, out, service_root, version, tracking, reader
            )
        # An answer that starts or continues change tracking carries a fresh snapshot: never
        # cached.
        result.entity_set = query_plan.entity_set.name
        result.version = version if tracking is None else None
        return result

    def _tracking(self, p: QueryPlan, prefer: str, query_string: str) -> _Tracking | None:
        """For a read of a tracked set that asks for tracking, or continues one."""
        if not isinstance(p, CollectionPlan) or p.entity_set.name not in self.published.relids:
            return None  # an untracked set is answered without Preference-Applied (§8.2.8.7)
        asked = track_preference(prefer) if prefer else None
        carried = None
        if TRACK_OPTION in query_string:
            carried = dict(parse_qsl(query_string)).get(TRACK_OPTION)
        if asked is None and carried is None:
            return None
        assert self.tokens is not None
        since = self.tokens.decode(carried, p.entity_set) if carried else None
        return _Tracking(asked, since)

    async def _track(self, conn: asyncpg.Connection, model: Model) -> dict[str, int]:
        """Install change tracking for the tracked sets; remove it where it was switched off."""
        relids: dict[str, int] = {}
        for es in model.entity_sets:
            oid = await conn.fetchval("SELECT to_regclass($1)::oid", sql.relation(es))
            if not es.tracked or oid is None:
                continue
            try:
                await changes.install(conn, es, oid)
            except asyncpg.InsufficientPrivilegeError:
                log.warning("%s: cannot install change tracking (no privilege)", es.name)
                continue
            relids[es.name] = oid
        if await conn.fetchval("SELECT to_regclass('r2sf.changes') IS NOT NULL"):
            stale = await conn.fetch(
                "SELECT DISTINCT tgrelid::regclass::text AS rel FROM pg_trigger"
                " WHERE tgname = 'r2sf_ct_ins' AND NOT tgrelid = ANY($1::oid[])",
                list(relids.values()),
            )
            for row in stale:
                for name in changes.TRIGGER_NAMES:
                    await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON {row['rel']}")
                log.info("%s: change tracking switched off; triggers removed", row["rel"])
        if relids and self.tokens is None:
            key = await changes.signing_key(conn)
            self.tokens = changes.Tokens(key, self.config.change_retention_s)
        return relids

    def version_of(self, entity_set: str) -> int | None:
        return None if self.tracker is None else self.tracker.version(entity_set)

    async def reader(self, entity_set: EntitySet) -> asyncpg.Pool:
        """Where a read of the set goes: the follower when it has replayed every change of the
        set's tables that this process has been told of (by the primary's NOTIFY), else the
        primary. So an answer is never older than the version it is cached and tagged under;
        a set without a version is read from the follower, as stale as its replay lag."""
        if self.read_pool is self.pool or self.tracker is None:
            return self.read_pool
        known = self.tracker.known(entity_set.name)
        if not known:
            return self.read_pool
        try:
            async with self.read_pool.acquire() as conn:
                rows = await conn.fetch(_REPLAYED_SQL, list(known))
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("follower unavailable (%s); reading from the primary", type(exc).__name__)
            self.follower_fallbacks += 1
            return self.pool
        replayed = {r["relid"]: r["version"] for r in rows}
        if all(replayed.get(oid, 0) >= v for oid, v in known.items()):
            return self.read_pool
        self.follower_fallbacks += 1
        return self.pool

    async def _count(
        self, p: CountPlan, options: QueryOptions, version: int | None, reader: asyncpg.Pool
    ) -> int:
        key = (p.entity_set.name, options.raw.get("filter"), options.raw.get("search"), version)
        cached = self.counts.get(key) if version is not None else None
        if cached is not None:
            return cached
        value = int(await self._fetchval(sql.count(p), reader))
        if version is not None:
            self.counts.put(key, value)
        return value

    async def _write(
        self,
        method: str,
        resource: Resource,
        fmt: Format,
        headers: dict[str, str],
        body: bytes,
        root: str,
    ) -> response.Response:
        allowed = {
            "collection": ("GET", "HEAD", "POST"),
            "entity": ("GET", "HEAD", "PATCH", "PUT", "DELETE"),
        }
        if resource.kind not in allowed:
            raise MethodNotAllowed(
                f"{method} is not allowed on this resource", allow=READ_METHODS, target=method
            )
        entity_set = self._entity_set(resource.entity_set or "")
        write.check_writable(entity_set)  # a view allows GET and HEAD only, whatever the path
        allow = allowed[resource.kind]
        if method not in allow:
            raise MethodNotAllowed(
                f"{method} is not allowed on this resource", allow=allow, target=method
            )
        out = sql.OutputFormat(ieee754=fmt.ieee754, full=fmt.metadata == "full")
        if method == "POST":
            plan = write.plan_write(entity_set, method, (), self._body(headers, body))
        else:
            assert resource.key is not None
            key = resolve_key(entity_set, resource.key)
            precondition = etags.Precondition.from_headers(headers)
            data = None if method == "DELETE" else self._body(headers, body)
            plan = write.plan_write(entity_set, method, key, data, precondition)
        outcome = await self._write_row(plan, sql.write(plan, out))
        if plan.kind == "create":
            created = outcome
            assert created is not None
            entity_json, opaque = created
            link = f"{root}{entity_set.name}({_key_of(entity_set, entity_json)})"
            written = {"Location": link, "OData-EntityId": link, "ETag": etags.weak(opaque)}
            if "return=minimal" in headers.get("prefer", ""):
                return response.Response(
                    204, b"", None, {**written, "Preference-Applied": "return=minimal"}
                )
            context = response.context_url(root, entity_set.name, None, "/$entity")
            result = response.entity(fmt, context, entity_json, etags.weak(opaque))
            result.status = 201
            result.headers.update(written)
            return result
        entity = plan.entity
        done, exists = outcome if outcome is not None else (None, False)
        if not exists:
            raise EntityNotFound(f"{entity} does not exist")
        if not done:
            precondition = plan.precondition
            if precondition.present:
                raise PreconditionFailed(
                    f"{entity} has changed: its current ETag does not satisfy "
                    "If-Match / If-None-Match; read it again",
                    target="If-Match" if precondition.if_match is not None else "If-None-Match",
                )
            raise EntityNotFound(f"{entity} does not exist")  # deleted while we waited for it
        tag = {} if plan.kind == "delete" else {"ETag": etags.weak(done)}
        return response.Response(204, b"", None, tag)

    async def _write_row(self, plan: write.WritePlan, statement: sql.Statement) -> Any:
        """Run a write; a refusal by the database becomes the error that names the property.
        A write cancelled by a deadlock or a serialization conflict runs again (WRITE_RETRIES)."""
        async with self.pool.acquire() as conn:
            for pause in (*WRITE_RETRIES, None):
                try:
                    done = await _guard(self._attempt(conn, plan, statement, pause is not None))
                    break
                except _Contended as exc:
                    assert pause is not None
                    log.info("a write to %s was cancelled by the database (%s); trying again",
                             plan.entity_set.name, exc.sqlstate)  # fmt: skip
                    await asyncio.sleep(pause)
            if self.read_pool is not self.pool and self.tracker is not None:
                # Read your writes: learn the version this write drew now, not when its NOTIFY
                # arrives, so the next read of the set waits for the follower or asks the
                # primary.
                known = self.tracker.known(plan.entity_set.name) or {}
                for r in await conn.fetch(_REPLAYED_SQL, list(known)):
                    self.tracker.learn(r["relid"], r["version"])
            return done

    async def _attempt(
        self,
        conn: asyncpg.Connection,
        plan: write.WritePlan,
        statement: sql.Statement,
        may_retry: bool = False,
    ) -> Any:
        entity_set, entity, vals = plan.entity_set, plan.entity, plan.values
        try:
            return await conn.fetchrow(statement.sql, *statement.params)
        except asyncpg.TransactionRollbackError as exc:
            if may_retry and exc.sqlstate in _CONTENDED:
                raise _Contended(exc.sqlstate) from None
            refused = violations.explain(self.published.model, entity_set, plan.kind, entity, exc)
            assert refused is not None  # class 40: "a concurrent change got in the way"
            raise refused from None
        except asyncpg.DataError:
            # A value PostgreSQL's input rules refuse; its error does not say whose it is.
            for prop, probe in sql.probes(vals):
                try:
                    await conn.fetchval(probe.sql, *probe.params)
                except asyncpg.DataError:
                    raise write.bad_value(prop) from None
            names = ", ".join(prop.name for prop, value in vals.items if value is not None)
            raise InvalidBody(
                f"{entity}: the database cannot store these values"
                + (f" (check {names})" if names else "")
            ) from None
        except asyncpg.PostgresError as exc:
            refusal = violations.explain(self.published.model, entity_set, plan.kind, entity, exc)
            if refusal is None:
                raise
            raise refusal from None

    def _entity_set(self, name: str) -> EntitySet:
        found = self.published.model.entity_set(name)
        if found is None:
            raise ResourceNotFound(f"no entity set named '{name}'", target=name)
        return found

    @staticmethod
    def _body(headers: dict[str, str], body: bytes) -> dict[str, Any]:
        kind = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if kind not in ("application/json", ""):
            raise UnsupportedMediaType(f"send the entity as application/json, not {kind}")
        return write.parse_body(body)

    async def _collection(
        self,
        request: ODataRequest,
        p: CollectionPlan,
        out: sql.OutputFormat,
        root: str,
        version: int | None,
        tracking: _Tracking | None,
        reader: asyncpg.Pool,
    ) -> response.Response:
        raw = request.options.raw
        count_key = (p.entity_set.name, raw.get("filter"), raw.get("search"), version)
        known = self.counts.get(count_key) if p.count and version is not None else None
        statement = sql.collection(p, out, with_count=known is None)
        since: changes.DeltaToken | None = None
        if tracking is None:
            row = await self._fetchrow(statement, reader)
        elif tracking.since is None:  # the first page: read the rows and the snapshot together
            row, snapshot = await self._read_with_snapshot(statement)
            since = self._token(p.entity_set, snapshot)
        else:
            row, since = await self._fetchrow(statement, reader), tracking.since
        assert row is not None
        body, count, rows, last, more = row
        if body is None:  # over the byte budget: the rows that fit, and a link to the rest
            row = await self._fetchrow(sql.collection(p, out, with_count=False, cut=True), reader)
            body, _, rows, last, more = row
        if known is not None:
            count = known
        elif p.count and version is not None:
            self.counts.put(count_key, count)
        link = None
        wanted = None if p.wanted is None else p.wanted - rows
        if more and wanted != 0:
            if p.paged:
                token = encode_token(p.shape, json.loads(last), wanted)
                link = response.next_link(root, p.entity_set.name, raw, {"skiptoken": token})
            else:
                # A client-driven page the byte budget cut short: the rest of the client's
                # $top, from where this page ended, so a client is never silently given less.
                rest = {"skip": str(p.offset + rows), "top": str(wanted)}
                link = response.next_link(root, p.entity_set.name, raw, rest)
        context = response.context_url(root, p.entity_set.name, p.select_context)
        if since is None or tracking is None:
            return response.collection(request.format, context, count, body, link)
        assert self.tokens is not None
        signed = self.tokens.encode(since)
        delta_link = None
        if link is not None:
            link += f"&{TRACK_OPTION}={quote(signed)}"
        else:
            delta_link = response.delta_link(root, p.entity_set.name, raw, signed)
        result = response.collection(request.format, context, count, body, link, delta_link)
        if tracking.asked:
            result.headers["Preference-Applied"] = tracking.asked
        return result

    def _token(self, entity_set: EntitySet, snapshot: str, **page: Any) -> changes.DeltaToken:
        return changes.DeltaToken(
            entity_set.name, changes.fingerprint(entity_set), snapshot, int(time.time()), **page
        )

    async def _read_with_snapshot(self, statement: sql.Statement) -> tuple[Any, str]:
        """Run a read and take its snapshot in one transaction: the rows are what it saw."""
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            snapshot = await _guard(conn.fetchval("SELECT pg_current_snapshot()::text"))
            row = await _guard(conn.fetchrow(statement.sql, *statement.params))
        return row, snapshot

    async def _delta(
        self, request: ODataRequest, p: CollectionPlan, out: sql.OutputFormat, root: str
    ) -> response.Response:
        """Changes since a delta token, one page of at most `page_size` entries (§11.3)."""
        es = p.entity_set
        oid = self.published.relids.get(es.name)
        if oid is None or self.tokens is None:
            raise Gone(
                f"change tracking is off for {es.name}, so its delta links cannot be served;"
                f" switch it on ([[odata.sets]] change_tracking = true) and start tracking again"
            )
        raw = request.options.raw
        extra = [f"${o}" for o in ("top", "skip", "orderby", "skiptoken", "count") if o in raw]
        if extra:
            raise InvalidQueryOption(
                f"{', '.join(extra)} cannot be combined with $deltatoken: a delta link carries"
                " only $filter, $search, $select and $deltatoken; use it as given",
                target=extra[0],
            )
        assert request.options.deltatoken is not None
        token = self.tokens.decode(request.options.deltatoken, es)
        keys = set(es.entity_type.key_properties)
        p = dataclasses.replace(
            p, select=tuple(q for q in es.entity_type.properties if q in p.select or q in keys)
        )
        limit = self.settings.page_size
        rows, until = await self._delta_rows(p, out, token, oid, limit)
        entries: list[str] = []
        size = 0
        for i, r in enumerate(rows[:limit]):
            # Bounded by bytes as well as entries, like every page (Salesforce's 8 MB limit).
            size += len((r["body"] or "").encode()) + 200
            if entries and size > self.settings.max_page_bytes:
                rows, limit = rows[: i + 1], i  # a shorter page, continued by its nextLink
                break
            if r["body"] is not None:
                entries.append(r["body"])
                continue
            values = json.loads(r["key"])
            key = tuple(
                (prop, Lit(v, prop.edm_type))
                for prop, v in zip(es.entity_type.key_properties, values, strict=True)
            )
            entity_id = f"{es.name}({resource_key_text(key)})"
            reason = "changed" if r["present"] else "deleted"
            entries.append(response.deleted_entry(root, es.name, entity_id, reason))
        next_link = delta_link = None
        if len(rows) > limit:
            page = changes.DeltaToken(
                es.name, token.model, token.since, token.issued, until, rows[limit - 1]["key"]
            )
            next_link = response.delta_link(root, es.name, raw, self.tokens.encode(page))
        else:
            fresh = self.tokens.encode(self._token(es, until))
            delta_link = response.delta_link(root, es.name, raw, fresh)
        context = response.context_url(root, es.name, p.select_context)
        return response.delta(request.format, context, entries, next_link, delta_link)

    async def _delta_rows(
        self,
        p: CollectionPlan,
        out: sql.OutputFormat,
        token: changes.DeltaToken,
        oid: int,
        limit: int,
    ) -> tuple[list[Any], str]:
        """The changed keys and rows, read in one snapshot; database faults retried here."""
        for pause in (*DELTA_RETRIES, None):
            try:
                async with (
                    self.pool.acquire() as conn,
                    conn.transaction(isolation="repeatable_read", readonly=True),
                ):
                    until = token.until or await conn.fetchval("SELECT pg_current_snapshot()::text")
                    if token.until is None:  # the first page of this delta
                        await changes.check_not_truncated(conn, oid, token.since, p.entity_set.name)
                    statement = sql.delta(
                        p, out, since=token.since, until=until, after=token.after, limit=limit
                    )
                    rows = await _guard(conn.fetch(statement.sql, *statement.params))
                    return list(rows), until
            except (ServiceUnavailable, OSError, asyncpg.PostgresConnectionError) as exc:
                if pause is None:
                    raise ServiceUnavailable(
                        "the database is unavailable; the delta link stays valid, try again"
                    ) from exc
                log.warning("delta read failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _entity(
        self,
        request: ODataRequest,
        p: EntityPlan,
        out: sql.OutputFormat,
        root: str,
        reader: asyncpg.Pool,
    ) -> response.Response:
        keys = resource_key_text(p.key)
        if p.prop is None:
            found = await self._fetchrow(sql.entity(p, out), reader)
            if found is None:
                raise EntityNotFound(f"{p.entity_set.name}({keys}) does not exist")
            body, opaque = found
            context = response.context_url(root, p.entity_set.name, p.select_context, "/$entity")
            return response.entity(request.format, context, body, etags.weak(opaque))
        row = await self._fetchrow(sql.property_value(p, out), reader)
        if row is None:
            raise EntityNotFound(f"{p.entity_set.name}({keys}) does not exist")
        value_json, raw = row
        if raw is None:
            return response.Response(204, b"", None)
        if p.raw_value:
            if isinstance(raw, bytes):
                return response.Response(200, raw, response.OCTETS)
            return response.plain(str(raw))
        context = f"{root}$metadata#{p.entity_set.name}({keys})/{p.prop.name}"
        return response.property_value(request.format, context, value_json)

    async def _fetchrow(self, statement: sql.Statement, pool: asyncpg.Pool | None = None) -> Any:
        return await self._read(statement, pool, "fetchrow")

    async def _fetchval(self, statement: sql.Statement, pool: asyncpg.Pool | None = None) -> Any:
        return await self._read(statement, pool, "fetchval")

    async def _read(self, statement: sql.Statement, pool: asyncpg.Pool | None, how: str) -> Any:
        pool = pool or self.pool
        if pool is not self.pool:
            # On the follower: a read it cancels (a replication conflict) or cannot run (down,
            # promoted away) is answered by the primary instead.
            try:
                async with pool.acquire() as conn:
                    return await getattr(conn, how)(statement.sql, *statement.params)
            except (asyncpg.SerializationError, asyncpg.PostgresConnectionError, OSError) as exc:
                log.warning("follower read failed (%s); asking the primary", type(exc).__name__)
                self.follower_fallbacks += 1
            except Exception as exc:  # the client's error, a timeout: classified as on the primary
                return await _guard(_failed(exc))
            pool = self.pool
        async with pool.acquire() as conn:
            return await _guard(getattr(conn, how)(statement.sql, *statement.params))


# The data versions a follower has replayed, for the tables a set reads.
_REPLAYED_SQL = "SELECT relid, version FROM r2sf.data_versions WHERE relid = ANY($1::oid[])"


@dataclass(frozen=True)
class _Tracking:
    asked: str | None  # the Prefer value to echo in Preference-Applied
    since: changes.DeltaToken | None  # carried by a nextLink: the first page's snapshot


def _key_of(entity_set: EntitySet, entity_json: str) -> str:
    data = json.loads(entity_json)
    key = tuple(
        (prop, Lit(data[prop.name], prop.edm_type))
        for prop in entity_set.entity_type.key_properties
    )
    return resource_key_text(key)


_DATA_ERRORS = {
    "22012": "it divides by zero",
    "22003": "a number in it, or computed from it, is out of range",
    "22008": "a date or time in it is out of range",
    "22007": "a date or time in it is not valid",
    "2201B": "a pattern in it is not a valid pattern",
    "22025": "a pattern in it ends with an escape character",
    "22P02": "a value in it is not valid for the property it is compared with",
    "22001": "a text value in it is too long for the property it is compared with",
    "2201F": "a power in it is out of range",
    "2201E": "a logarithm in it is of zero or a negative number",
    "22019": "an escape character in it is not valid",
}


class _Contended(Exception):
    """A write the database cancelled to break a conflict with another transaction; nothing of
    it remains, so it may run again."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


async def _failed(exc: BaseException) -> Any:
    raise exc


async def _guard(awaitable: Any) -> Any:
    """Run a statement, turning database failures into the right OData errors."""
    try:
        return await awaitable
    except asyncpg.DataError as exc:
        # SQLSTATE class 22: the client's values cannot be evaluated (division by zero,
        # out-of-range numbers, invalid patterns). Said in our words: PostgreSQL's own text
        # names its types and values as the database sees them.
        why = _DATA_ERRORS.get(exc.sqlstate or "", "a value in it cannot be used as written")
        raise BadRequest(f"the query cannot be evaluated: {why}") from None
    except asyncpg.ProgramLimitExceededError:
        # SQLSTATE class 54: e.g. too many columns or arguments for one statement.
        raise BadRequest("the query is too complex for the database; simplify it") from None
    except asyncpg.QueryCanceledError:
        raise ServiceUnavailable(
            "the query took too long and was cancelled; narrow the filter"
        ) from None
    except (TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        log.error("database unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable("the database is unavailable; try again shortly") from None
    except ODataError:
        raise
    except asyncpg.PostgresError as exc:
        log.error("database error %s: %s", exc.sqlstate, exc.__class__.__name__)
        raise ServiceError("internal error") from exc
