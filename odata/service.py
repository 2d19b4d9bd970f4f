"""The OData request pipeline: request -> plan -> SQL -> one round trip -> response.

`ODataService.handle` takes the pieces of an HTTP request and returns a `Response`; it owns the
model (reloadable) and runs statements on an asyncpg pool. Every failure leaves as an
`ODataError`; database faults are classified here and never shown to the client as SQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from odata import csdl, response, sql
from odata.catalog import SetOptions, load_model
from odata.errors import (
    BadRequest,
    EntityNotFound,
    MethodNotAllowed,
    ODataError,
    ServiceError,
    ServiceUnavailable,
)
from odata.model import Model
from odata.plan import CollectionPlan, CountPlan, EntityPlan, Settings, encode_token, plan
from odata.request import ODataRequest, check_max_version, negotiate, parse_path, parse_query

log = logging.getLogger("r2sf.odata")

READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class ServiceConfig:
    expose: tuple[str, ...] = ("public.*",)
    sets: tuple[SetOptions, ...] = ()
    page_size: int = 1000
    case_insensitive: bool = True
    unsupported_types: Literal["string", "omit"] = "string"


@dataclass(frozen=True)
class Published:
    """A model and its pre-rendered documents, swapped atomically on reload."""

    model: Model
    metadata_xml: bytes
    metadata_json: bytes


class ODataService:
    def __init__(self, pool: asyncpg.Pool, config: ServiceConfig) -> None:
        self.pool = pool
        self.config = config
        self.settings = Settings(
            page_size=config.page_size, case_insensitive=config.case_insensitive
        )
        self._published: Published | None = None

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
            )
        self._published = Published(model, csdl.metadata_xml(model), csdl.metadata_json(model))
        log.info("model loaded: %d entity sets", len(model.entity_sets))
        return model

    async def handle(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        service_root: str,
    ) -> response.Response:
        """`path` is below the service root (still percent-encoded); `service_root` is the
        absolute URL of the root, ending in `/`."""
        check_max_version(headers.get("odata-maxversion"))
        resource = parse_path(path)
        options = parse_query(query_string)
        fmt = negotiate(resource, headers.get("accept"), options.raw.get("format"))
        if method not in READ_METHODS:
            raise MethodNotAllowed(
                f"{method} is not allowed on this resource", allow=READ_METHODS, target=method
            )
        published = self.published
        if resource.kind == "service":
            doc = csdl.service_document(published.model, service_root + "$metadata")
            body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            return response.Response(200, body, response.json_type(fmt))
        if resource.kind == "metadata":
            if fmt.csdl_json:
                return response.Response(200, published.metadata_json, "application/json")
            return response.Response(200, published.metadata_xml, response.XML)
        request = ODataRequest(resource, options, fmt)
        try:
            query_plan = plan(request, published.model, self.settings)
        except RecursionError:
            raise BadRequest("the expression is nested too deeply; simplify it") from None
        out = sql.OutputFormat(ieee754=fmt.ieee754, full=fmt.metadata == "full")
        if isinstance(query_plan, CountPlan):
            value = await self._fetchval(sql.count(query_plan))
            return response.plain(str(value))
        if isinstance(query_plan, EntityPlan):
            return await self._entity(request, query_plan, out, service_root)
        return await self._collection(request, query_plan, out, service_root)

    async def _collection(
        self, request: ODataRequest, p: CollectionPlan, out: sql.OutputFormat, root: str
    ) -> response.Response:
        row = await self._fetchrow(sql.collection(p, out))
        assert row is not None
        body, count, last, more = row
        link = None
        if p.paged and more and last is not None and p.remaining != 0:
            token = encode_token(p.shape, json.loads(last)[0], p.remaining)
            link = response.next_link(root, p.entity_set.name, request.options.raw, token)
        context = response.context_url(root, p.entity_set.name, p.select_context)
        return response.collection(request.format, context, count, body, link)

    async def _entity(
        self, request: ODataRequest, p: EntityPlan, out: sql.OutputFormat, root: str
    ) -> response.Response:
        keys = ",".join(_key_text(p))
        if p.prop is None:
            body = await self._fetchval(sql.entity(p, out))
            if body is None:
                raise EntityNotFound(f"{p.entity_set.name}({keys}) does not exist")
            context = response.context_url(root, p.entity_set.name, p.select_context, "/$entity")
            return response.entity(request.format, context, body)
        row = await self._fetchrow(sql.property_value(p, out))
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

    async def _fetchrow(self, statement: sql.Statement) -> Any:
        async with self.pool.acquire() as conn:
            return await _guard(conn.fetchrow(statement.sql, *statement.params))

    async def _fetchval(self, statement: sql.Statement) -> Any:
        async with self.pool.acquire() as conn:
            return await _guard(conn.fetchval(statement.sql, *statement.params))


def _key_text(p: EntityPlan) -> Sequence[str]:
    single = len(p.key) == 1
    out = []
    for prop, lit in p.key:
        text = (
            f"'{str(lit.value).replace(chr(39), chr(39) * 2)}'"
            if isinstance(lit.value, str)
            else str(lit.value)
        )
        out.append(text if single else f"{prop.name}={text}")
    return out


async def _guard(awaitable: Any) -> Any:
    """Run a statement, turning database failures into the right OData errors."""
    try:
        return await awaitable
    except asyncpg.DataError as exc:
        # SQLSTATE class 22: the client's values cannot be evaluated (division by zero,
        # out-of-range numbers, invalid patterns). The message names the value, never the SQL.
        raise BadRequest(
            f"the query cannot be evaluated: {exc.args[0] if exc.args else exc}"
        ) from None
    except asyncpg.QueryCanceledError:
        raise ServiceUnavailable(
            "the query took too long and was cancelled; narrow the filter"
        ) from None
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        OSError,
        asyncio.TimeoutError,
    ) as exc:
        log.error("database unavailable: %s", type(exc).__name__)
        raise ServiceUnavailable("the database is unavailable; try again shortly") from None
    except ODataError:
        raise
    except asyncpg.PostgresError as exc:
        log.error("database error %s: %s", exc.sqlstate, exc.__class__.__name__)
        raise ServiceError("internal error") from exc
