"""Extract: stream a job's source rows out of the warehouse as COPY-format bytes.

`postgresql://` sources stream COPY chunks through asyncpg; `redshift://` sources read a
server-side cursor (`DECLARE` / `FETCH FORWARD n`) with `redshift_connector` in a child process
(`sync.redshift`) that writes COPY CSV into a pipe. Either way memory is bounded by a few chunks
(queue or pipe backpressure), never the result size, and extraction overlaps loading. This
module never writes anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import asyncpg

from odata.ident import ident
from sync import redshift, warehouse
from sync.config import Incremental
from sync.errors import ExtractError
from sync.state import Watermark

TEXT_OID = 25
_QUEUE_CHUNKS = 16
_PIPE_LIMIT = 1 << 20  # bytes the parent buffers from the extract process before pushing back
_END = object()
# Output the target reads back exactly whatever its own settings: ISO dates, shortest-exact
# floats (PostgreSQL < 12 needs extra_float_digits 3 for that), standard interval syntax.
TEXT_SETTINGS = {
    "application_name": "r2sf sync (extract)",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    # Casts between timestamp and timestamptz (fingerprints cast as the target's merge does, in
    # UTC) must not depend on the server's default.
    "TimeZone": "UTC",
}


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type_oid: int  # the type the staging table uses for this column (TEXT_OID when cast)
    cast_to_text: bool = False
    typmod: int = -1  # the source's type modifier (length, precision, scale) when known
    not_null: bool = False  # declared NOT NULL in the source table (`table =` jobs)
    redshift_type: str = ""  # a Redshift-only type's name, and what it becomes: "SUPER -> jsonb"


is_redshift = warehouse.is_redshift


@dataclass(frozen=True)
class Limits:
    """How long the extraction may take: the job's timeout bounds every statement on the source
    (statement_timeout) and every wait for the socket (a little longer, so the server's own
    cancellation arrives first)."""

    statement_timeout: int = 3600  # seconds

    @property
    def socket_timeout(self) -> int:
        return self.statement_timeout + 60


@dataclass(frozen=True)
class Window:
    """Rows to read: those at or above the watermark, less the job's lookback."""

    watermark: Watermark
    lookback: int | str | None = None

    def params(self) -> list[Any]:
        out: list[Any] = [self.watermark.value]
        if self.lookback is not None:
            out.append(self.lookback if isinstance(self.lookback, str) else str(self.lookback))
        return out


def window(watermark: Watermark | None, incremental: Incremental | None) -> Window | None:
    if watermark is None:
        return None
    return Window(watermark, incremental.lookback if incremental is not None else None)


_INTERVAL_TYPES = ("date", "timestamp", "time")


def check_lookback(w: Window) -> None:
    """A duration lookback needs a date/time watermark, a number one a number column."""
    is_time = w.watermark.value_type.startswith(_INTERVAL_TYPES)
    if w.lookback is None:
        return
    if isinstance(w.lookback, str) and not is_time:
        raise ValueError(
            f'lookback "{w.lookback}" is a duration, but the watermark column'
            f" {w.watermark.column} is {w.watermark.value_type}; write a number"
        )
    if isinstance(w.lookback, int) and is_time:
        raise ValueError(
            f"lookback {w.lookback} is a number, but the watermark column {w.watermark.column}"
            f' is {w.watermark.value_type}; write a duration such as "{w.lookback} hours"'
        )


def extraction_sql(
    sql: str,
    columns: Sequence[SourceColumn] | None,
    watermark: Window | None,
    placeholder: str,
    lookback_placeholder: str = "",
) -> str:
    """The job's statement wrapped to select named columns above the watermark.

    Rows whose watermark column is NULL never pass `>=`: incremental runs skip them, full runs
    (the first, --full-refresh, the job's full_refresh schedule) read them.
    """
    select = "*"
    if columns is not None:
        select = ", ".join(ident(c.name) + ("::text" if c.cast_to_text else "") for c in columns)
    out = f"SELECT {select} FROM ({sql}) AS r2sf_src"
    if watermark is not None:
        # `>=`, not `>`: a row committed after the last run with the watermark's own value
        # would otherwise never be read. Rows already synced at that value merge as unchanged.
        # value_type comes from the target's own catalogue (format_type), never from a user.
        wm = watermark.watermark
        bound = f"CAST({placeholder} AS {wm.value_type})"
        if watermark.lookback is not None:
            step = "interval" if isinstance(watermark.lookback, str) else wm.value_type
            bound = f"{bound} - CAST({lookback_placeholder} AS {step})"
        out += f" WHERE r2sf_src.{ident(wm.column)} >= {bound}"
    return out


class Source:
    """One extraction: `columns` is known after `open()`; `batches()` yields COPY data in
    `format`, and `rows` / `nbytes` count what it has yielded so far."""

    format: Literal["binary", "text", "csv"]
    columns: list[SourceColumn]
    rows: int
    nbytes: int
    describe_only: bool = False  # opened only to learn the columns; batches() yields nothing

    async def open(self) -> None:
        raise NotImplementedError

    def batches(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def open_source(
    url: str,
    sql: str,
    watermark: Window | None,
    fetch_size: int | None,
    table: str | None = None,
    limits: Limits | None = None,
    describe_only: bool = False,
    *,
    export: bool = False,
    snapshot: str | None = None,
    settings: Mapping[str, str] | None = None,
) -> Source:
    """The job's extraction; `table` (schema.table of a `table =` job) adds its NOT NULLs.

    `describe_only`: a Redshift source only describes the columns (no cursor runs the query);
    a PostgreSQL source never runs it before `batches()` anyway. `export` / `snapshot`: share
    one snapshot between PostgreSQL extractions (see PostgresSource). `settings`: a PostgreSQL
    source's for this query, set in its shared-snapshot transaction only (`set_config(...,
    true)`, so a pooled server connection keeps nothing): a summary's `work_mem`, so its
    grouping does not spill to disk, or no parallel workers for a summary already split in
    two queries."""
    if watermark is not None:
        check_lookback(watermark)
    if is_redshift(url):
        return RedshiftSource(
            url, sql, watermark, fetch_size, table, limits or Limits(), describe_only
        )
    return PostgresSource(
        url,
        sql,
        watermark,
        table,
        limits or Limits(),
        export=export,
        snapshot=snapshot,
        settings=settings,
    )


def _check_unique(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"the source query returns column '{n}' twice; alias one of them")
        seen.add(n)


class PostgresSource(Source):
    # Text, not binary: rows end in a newline (so they can be counted for progress), and the
    # target's input functions check every value against its column type.
    format = "text"

    def __init__(
        self,
        url: str,
        sql: str,
        watermark: Window | None,
        table: str | None = None,
        limits: Limits | None = None,
        *,
        export: bool = False,
        snapshot: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.replace("postgres://", "postgresql://", 1)
        self.sql = sql
        self.watermark = watermark
        self.table = table
        self.limits = limits or Limits()
        self.conn: asyncpg.Connection | None = None
        self.task: asyncio.Task[None] | None = None
        self.rows = 0
        self.nbytes = 0
        # Snapshots shared between extractions (pg_export_snapshot): `export` reads in a
        # REPEATABLE READ transaction whose snapshot `self.snapshot` names, for other
        # extractions to read with (`snapshot=`) while this one is open.
        self.export = export
        self.snapshot = snapshot
        self.settings = dict(settings or {})

    async def open(self) -> None:
        settings = {**TEXT_SETTINGS, "statement_timeout": f"{self.limits.statement_timeout}s"}
        self.conn = await asyncpg.connect(
            self.url, server_settings=settings, timeout=warehouse.CONNECT_TIMEOUT
        )
        if self.export or self.snapshot is not None:
            await self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            if self.snapshot is not None:
                # The snapshot id comes from pg_export_snapshot(), never from a user.
                await self.conn.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
            else:
                self.snapshot = await self.conn.fetchval("SELECT pg_export_snapshot()")
            # After the snapshot: SET TRANSACTION SNAPSHOT must come before any query.
            for name, value in self.settings.items():
                await self.conn.execute("SELECT set_config($1, $2, true)", name, value)
        stmt = await self.conn.prepare(
            extraction_sql(self.sql, None, self.watermark, "$1::text", "$2::text"),
        )
        cols = []
        declared = await self._declared()
        for attr in stmt.get_attributes():
            custom = attr.type.oid >= redshift.FIRST_USER_OID
            typmod, not_null = declared.get(attr.name, (-1, False))
            if custom:
                cols.append(SourceColumn(attr.name, TEXT_OID, True))
            else:
                cols.append(SourceColumn(attr.name, attr.type.oid, False, typmod, not_null))
        _check_unique([c.name for c in cols])
        self.columns = cols

    async def _declared(self) -> dict[str, tuple[int, bool]]:
        """Column -> (type modifier, NOT NULL) as declared: the table's own, or for a query
        those of a temporary view over it (views keep typmods; NOT NULL is not known there)."""
        assert self.conn is not None
        sql = (
            "SELECT attname, atttypmod, attnotnull FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped"
        )
        if self.table is not None:
            schema, table = self.table.split(".")
            name = f"{ident(schema)}.{ident(table)}"
            rows = await self.conn.fetch(sql, name)
            return {r["attname"]: (r["atttypmod"], r["attnotnull"]) for r in rows}
        # Rolled back: the probe leaves nothing behind (a savepoint inside a shared snapshot's
        # transaction, which asyncpg does not track).
        shared = self.export or self.snapshot is not None
        begin, undo = ("SAVEPOINT r2sf_probe", "ROLLBACK TO SAVEPOINT r2sf_probe")
        if not shared:
            begin, undo = "BEGIN", "ROLLBACK"
        await self.conn.execute(begin)
        try:
            await self.conn.execute(
                f"CREATE TEMP VIEW r2sf_probe AS SELECT * FROM ({self.sql}) AS r2sf_src"
            )
            rows = await self.conn.fetch(sql, "pg_temp.r2sf_probe")
            return {r["attname"]: (r["atttypmod"], False) for r in rows}
        except asyncpg.PostgresError:
            return {}  # no TEMP privilege: plain types, checked and cast while merging
        finally:
            await self.conn.execute(undo)

    async def batches(self) -> AsyncIterator[bytes]:
        assert self.conn is not None
        conn = self.conn
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
        args = self.watermark.params() if self.watermark else []
        sql = extraction_sql(self.sql, self.columns, self.watermark, "$1::text", "$2::text")

        async def produce() -> None:
            try:
                await conn.copy_from_query(sql, *args, output=queue.put, format="text")
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
            chunk = bytes(item)
            self.rows += chunk.count(b"\n")  # escaped inside values, so one per row
            self.nbytes += len(chunk)
            yield chunk

    async def close(self) -> None:
        if self.task is not None:
            if not self.task.done():
                self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task  # also retrieves the error batches() re-raised
        if self.conn is not None:
            await self.conn.close()


def redshift_connect_args(url: str) -> dict[str, Any]:
    """redshift_connector.connect() keyword arguments for a redshift:// URL (sync/warehouse.py)."""
    return warehouse.connect_args(url)


class RedshiftSource(Source):
    """Reads through a server-side cursor in a child process (`sync.redshift`) that turns rows
    into COPY CSV bytes, so the driver's per-value Python work runs beside the load, not in it."""

    format = "csv"

    def __init__(
        self,
        url: str,
        sql: str,
        watermark: Window | None,
        fetch_size: int | None,
        table: str | None = None,
        limits: Limits | None = None,
        describe_only: bool = False,
    ) -> None:
        self.url = url
        self.sql = sql
        self.watermark = watermark
        self.fetch_size = fetch_size
        self.table = table
        self.limits = limits or Limits()
        self.describe_only = describe_only
        self.cluster: dict[str, Any] = {}  # what the extract learnt: nodes, fetch_size
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_task: asyncio.Task[None] | None = None
        self.stderr_tail = b""
        self.rows = 0
        self.nbytes = 0
        self.fetch_rows: list[int] = []  # rows per FETCH, for tests of the fetch bound

    async def open(self) -> None:
        request = {
            "connect": redshift_connect_args(self.url),
            "sql": extraction_sql(self.sql, None, self.watermark, "%s", "%s"),
            "args": self.watermark.params() if self.watermark else None,
            "fetch_size": self.fetch_size,
            "table": self.table.split(".") if self.table else None,
            "statement_timeout": self.limits.statement_timeout,
            "socket_timeout": self.limits.socket_timeout,
            "describe_only": self.describe_only,
        }
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p
        ))  # fmt: skip
        # The request (with the password) goes through the pipe, never the command line.
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sync.redshift",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, limit=_PIPE_LIMIT,
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.stderr_task = asyncio.create_task(self._drain_stderr(self.proc.stderr))
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        kind, _, payload = await self._frame()
        if kind != redshift.COLUMNS:
            raise ExtractError("ExtractError", f"unexpected frame {kind!r}", False)
        described = json.loads(payload)
        self.cluster = {k: v for k, v in described.items() if k != "columns"}
        columns = [_redshift_column(*c) for c in described["columns"]]
        _check_unique([c.name for c in columns])
        self.columns = columns

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.stderr_tail = (self.stderr_tail + chunk)[-2000:]

    async def _frame(self) -> tuple[bytes, int, bytes]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            head = await self.proc.stdout.readexactly(redshift.FRAME.size)
            kind, rows, size = redshift.FRAME.unpack(head)
            payload = await self.proc.stdout.readexactly(size)
        except asyncio.IncompleteReadError:
            code = await self.proc.wait()
            if self.stderr_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.stderr_task, 2)
            last = self.stderr_tail.decode(errors="replace").strip().splitlines()[-1:]
            said = f": {last[0]}" if last else ""
            raise ExtractError(
                "ExtractError", f"the Redshift extract process exited with code {code}{said}", False
            ) from None
        if kind == redshift.ERROR:
            err = json.loads(payload)
            raise ExtractError(err["type"], err["message"], bool(err["transient"]))
        return kind, rows, payload

    async def batches(self) -> AsyncIterator[bytes]:
        while True:
            kind, rows, payload = await self._frame()
            if kind == redshift.END:
                return
            self.rows += rows
            self.nbytes += len(payload)
            self.fetch_rows.append(rows)
            yield payload

    async def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            # Our own child: closing its stdin alone ends it, killing it makes that immediate.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()
        if self.stderr_task is not None:
            self.stderr_task.cancel()
            with contextlib.suppress(BaseException):
                await self.stderr_task


def _redshift_column(name: str, oid: int, typmod: int, not_null: bool) -> SourceColumn:
    """The staging column a warehouse column becomes (see redshift.REDSHIFT_ONLY_TYPES)."""
    only = redshift.REDSHIFT_ONLY_TYPES.get(oid)
    if only is not None:
        if only.refused is not None:
            raise ValueError(
                f"column '{name}' is {only.name}, which PostgreSQL has no type for;"
                f" {only.refused.format(col=ident(name))} in the job's query"
            )
        return SourceColumn(name, only.staged_as, cast_to_text=only.staged_as == TEXT_OID,
                            not_null=not_null, redshift_type=f"{only.name} -> {only.form}")  # fmt: skip
    if redshift.read_as_text(oid):
        return SourceColumn(name, TEXT_OID, cast_to_text=True, not_null=not_null)
    return SourceColumn(name, oid, typmod=typmod, not_null=not_null)


async def describe(
    url: str, sql: str, table: str | None = None
) -> tuple[list[SourceColumn], dict[str, Any]]:
    """The columns a job's query returns as they would be staged, without reading rows;
    raises ValueError for a column r2sf refuses (naming it and the expression to write)."""
    source: Source
    if is_redshift(url):
        source = RedshiftSource(url, sql, None, None, table, describe_only=True)
    else:
        source = PostgresSource(url, sql, None, table)
    try:
        await source.open()
        cluster = getattr(source, "cluster", {})
        return source.columns, cluster
    finally:
        await source.close()
