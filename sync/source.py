"""Extract: stream a job's source rows out of the warehouse in bounded batches.

`postgresql://` sources stream binary COPY chunks through asyncpg; `redshift://` sources read a
server-side cursor (`DECLARE` / `FETCH FORWARD n`) with `redshift_connector` in a thread. Either
way a bounded queue sits between the reader and the loader, so memory is bounded by the batch
size and extraction overlaps loading. This module never writes anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from sync.config import quote_ident
from sync.state import Watermark

# OIDs below this are built into every PostgreSQL; anything else (enums, domains, Redshift's
# SUPER/GEOMETRY...) may not exist in the target, so it is extracted as text.
FIRST_USER_OID = 16384
TEXT_OID = 25
_BINARY_QUEUE_CHUNKS = 16
_END = object()


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type_oid: int  # the type the staging table uses for this column (TEXT_OID when cast)
    cast_to_text: bool = False


Batch = bytes | list[Sequence[Any]]


def is_redshift(url: str) -> bool:
    return url.split("://", 1)[0] == "redshift"


def extraction_sql(
    sql: str,
    columns: Sequence[SourceColumn] | None,
    watermark: Watermark | None,
    placeholder: str,
) -> str:
    """The job's statement wrapped to select named columns above the watermark."""
    select = "*"
    if columns is not None:
        select = ", ".join(
            quote_ident(c.name) + ("::text" if c.cast_to_text else "") for c in columns
        )
    out = f"SELECT {select} FROM ({sql}) AS r2sf_src"
    if watermark is not None:
        # value_type comes from the target's own catalogue (format_type), never from a user.
        out += (
            f" WHERE r2sf_src.{quote_ident(watermark.column)}"
            f" > CAST({placeholder} AS {watermark.value_type})"
        )
    return out


class Source:
    """One extraction: `columns` is known after `open()`; `batches()` yields the data."""

    format: Literal["binary", "records"]
    columns: list[SourceColumn]

    async def open(self) -> None:
        raise NotImplementedError

    def batches(self) -> AsyncIterator[Batch]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def open_source(
    url: str, sql: str, watermark: Watermark | None, fetch_size: int, batch_size: int
) -> Source:
    if is_redshift(url):
        return RedshiftSource(url, sql, watermark, fetch_size, batch_size)
    return PostgresSource(url, sql, watermark)


def _check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"the source query returns column '{n}' twice; alias one of them")
        seen.add(n)


class PostgresSource(Source):
    format = "binary"

    def __init__(self, url: str, sql: str, watermark: Watermark | None) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)
        self.sql = sql
        self.watermark = watermark
        self.conn: asyncpg.Connection | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(
            self.url, server_settings={"application_name": "r2sf sync (extract)"}
        )
        stmt = await self.conn.prepare(
            extraction_sql(self.sql, None, self.watermark, "$1::text"),
        )
        cols = []
        for attr in stmt.get_attributes():
            custom = attr.type.oid >= FIRST_USER_OID
            cols.append(SourceColumn(attr.name, TEXT_OID if custom else attr.type.oid, custom))
        _check_unique([c.name for c in cols])
        self.columns = cols

    async def batches(self) -> AsyncIterator[Batch]:
        assert self.conn is not None
        conn = self.conn
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_BINARY_QUEUE_CHUNKS)
        args = [self.watermark.value] if self.watermark else []
        sql = extraction_sql(self.sql, self.columns, self.watermark, "$1::text")

        async def produce() -> None:
            try:
                await conn.copy_from_query(sql, *args, output=queue.put, format="binary")
            except BaseException as exc:
                await queue.put(exc)
                raise
            await queue.put(_END)

        self.task = asyncio.create_task(produce())
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        if self.conn is not None:
            await self.conn.close()


def redshift_connect_args(url: str) -> dict[str, Any]:
    """redshift_connector.connect() keyword arguments for a redshift:// URL (SSL on by default)."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sslmode = query.get("sslmode", "verify-ca")
    args: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 5439,
        "database": unquote(parts.path.lstrip("/")) or "dev",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "application_name": "r2sf sync",
    }
    if sslmode == "disable" or query.get("ssl", "").lower() in ("false", "0", "off"):
        args["ssl"] = False
    else:
        args["ssl"] = True
        # redshift_connector verifies the server certificate; "require" has no weaker mode there.
        args["sslmode"] = "verify-full" if sslmode == "verify-full" else "verify-ca"
    return args


class RedshiftSource(Source):
    """Reads through a server-side cursor in a daemon thread (the driver blocks)."""

    format = "records"

    def __init__(
        self, url: str, sql: str, watermark: Watermark | None, fetch_size: int, batch_size: int
    ) -> None:
        self.url = url
        self.sql = sql
        self.watermark = watermark
        self.fetch_size = fetch_size
        # Queue capacity in fetches, so at most about batch_size rows wait in memory.
        self.capacity = max(1, batch_size // fetch_size)
        self.stop = threading.Event()
        self.queue: asyncio.Queue[Any] | None = None
        self.thread: threading.Thread | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue(maxsize=self.capacity)
        self.thread = threading.Thread(
            target=self._read, args=(loop, self.queue), name="r2sf-redshift", daemon=True
        )
        self.thread.start()
        first = await self.queue.get()
        if isinstance(first, BaseException):
            raise first
        self.columns = first

    def _put(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            try:
                fut.result(timeout=0.5)
                return True
            except TimeoutError:
                fut.cancel()
            except RuntimeError:  # loop closed
                return False
        return False

    def _read(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        import redshift_connector

        conn = None
        try:
            conn = redshift_connector.connect(**redshift_connect_args(self.url))
            cur = conn.cursor()
            args = (self.watermark.value,) if self.watermark else None
            # Probe the column types without reading rows: the cursor's description.
            cur.execute(
                "DECLARE r2sf_cur CURSOR FOR "
                + extraction_sql(self.sql, None, self.watermark, "%s"),
                args,
            )
            cur.execute(f"FETCH FORWARD {int(self.fetch_size)} FROM r2sf_cur")
            desc = cur.description or []
            columns = [_redshift_column(d[0], int(d[1])) for d in desc]
            _check_unique([c.name for c in columns])
            if not self._put(loop, queue, columns):
                return
            text_idx = [i for i, c in enumerate(columns) if c.cast_to_text]
            while not self.stop.is_set():
                fetched = cur.fetchall()
                if not fetched:
                    break
                rows = [_stringify(r, text_idx) for r in fetched] if text_idx else list(fetched)
                if not self._put(loop, queue, rows):
                    return
                cur.execute(f"FETCH FORWARD {int(self.fetch_size)} FROM r2sf_cur")
            cur.execute("CLOSE r2sf_cur")
            conn.rollback()
            self._put(loop, queue, _END)
        except BaseException as exc:
            self._put(loop, queue, exc)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    async def batches(self) -> AsyncIterator[Batch]:
        assert self.queue is not None
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def close(self) -> None:
        self.stop.set()
        if self.queue is not None:
            # Unblock a reader waiting to put.
            while not self.queue.empty():
                self.queue.get_nowait()


def _redshift_column(name: str, oid: int) -> SourceColumn:
    if oid >= FIRST_USER_OID or oid in _REDSHIFT_ONLY_OIDS:
        return SourceColumn(name, TEXT_OID, cast_to_text=True)
    return SourceColumn(name, oid)


# Redshift types with no PostgreSQL equivalent of the same OID: GEOMETRY, SUPER, HLLSKETCH,
# GEOGRAPHY, VARBYTE (Redshift's own OIDs); read as text.
_REDSHIFT_ONLY_OIDS = frozenset({3000, 4000, 2990, 3001, 6551})


def _stringify(row: Sequence[Any], idx: list[int]) -> list[Any]:
    out = list(row)
    for i in idx:
        if out[i] is not None:
            out[i] = str(out[i])
    return out
