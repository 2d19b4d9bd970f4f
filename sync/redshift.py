"""The Redshift extract process: `redshift_connector` rows in, COPY CSV bytes out, on a pipe.

The driver decodes every value in Python, so it runs in its own process (`python -m
sync.redshift`) and never competes with the loader for the GIL. The parent writes one JSON
request line to its stdin and reads length-prefixed frames from its stdout; the child exits as
soon as its stdin closes (the parent died or cancelled). It imports no asyncpg or r2sf config
and never writes to any database.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

# Frame: kind (1 byte), rows (uint32), payload length (uint32), payload.
FRAME = struct.Struct(">cII")
COLUMNS = b"C"  # payload: JSON {"columns": [[name, oid, typmod, not null], ...], "nodes", ...}
DATA = b"D"  # payload: COPY ... (FORMAT csv) rows, `rows` of them
ERROR = b"E"  # payload: JSON {"type", "message", "transient"}
END = b"Z"  # rows: the total

# OIDs below this are built into every PostgreSQL; anything else (enums, domains... of a
# PostgreSQL source) may not exist in the target: read as text.
FIRST_USER_OID = 16384
TEXT_OID = 25


@dataclass(frozen=True)
class RedshiftType:
    """A Redshift type PostgreSQL does not have, and what r2sf makes of it."""

    name: str
    staged_as: int  # the PostgreSQL type its text form is staged (and created) as
    form: str  # what the target column holds, in words
    refused: str | None = None  # the expression to write instead, {col} being the column


# OIDs as Amazon's drivers know them (redshift_connector utils/oids.py RedshiftOID, and the
# JDBC driver's com.amazon.redshift.core.Oid: HLLSKETCH 2935 is only in the latter). Each is
# sent as text (see BINARY_EXACT): GEOMETRY and GEOGRAPHY as hex EWKB, SUPER as JSON, VARBYTE
# as hex, HLLSKETCH as its JSON form, the interval kinds as PostgreSQL's interval output.
REDSHIFT_ONLY_TYPES: dict[int, RedshiftType] = {
    # Hex EWKB: a PostGIS geometry/geography target column takes it as input too.
    3000: RedshiftType("GEOMETRY", TEXT_OID, "text (hex EWKB)"),
    3999: RedshiftType("GEOMETRY", TEXT_OID, "text (hex EWKB)"),
    3001: RedshiftType("GEOGRAPHY", TEXT_OID, "text (hex EWKB)"),
    4000: RedshiftType("SUPER", 3802, "jsonb"),
    6551: RedshiftType("VARBYTE", 17, "bytea"),
    1188: RedshiftType("INTERVAL YEAR TO MONTH", 1186, "interval"),
    1190: RedshiftType("INTERVAL DAY TO SECOND", 1186, "interval"),
    2935: RedshiftType(
        "HLLSKETCH",
        TEXT_OID,
        "refused",
        refused="select hll_cardinality({col}) AS {col} (the estimate)",
    ),
}

# Types whose binary form the driver decodes exactly, for every value (tests/
# test_redshift_transport.py feeds it byte strings in the cluster's format): integers and
# floats are struct.unpack of the IEEE/two's complement bytes, booleans one byte, and the
# text types are their UTF-8 bytes either way. Every other type is asked for as text, which
# the target's input functions read back exactly: the driver's binary decoders lose a
# microsecond of TIME, shift dates before 1582 by the Julian calendar's days, clamp dates and
# timestamps outside Python's years 1-9999 to its min/max, and drop TIMETZ's offset.
BINARY_EXACT = frozenset({16, 18, 19, 20, 21, 23, 25, 700, 701, 1042, 1043})

# Driver errors that mean the connection failed rather than the query.
_TRANSIENT_NAMES = frozenset({"InterfaceError", "OperationalError"})

# Redshift's own refusals of a cursor (https://docs.aws.amazon.com/redshift/latest/dg/
# declare.html, "Cursor constraints"; FETCH: "for single-node clusters, the maximum value for
# count is 1000"), matched by their message text.
SINGLE_NODE_FETCH = "for a single node configuration"
CURSOR_TOO_LARGE = "total set of cursor data"
SINGLE_NODE_FETCH_SIZE = 1000
MULTI_NODE_FETCH_SIZE = 10_000

# Test seam: `module:function` to call instead of redshift_connector.connect (same arguments).
CONNECT_SEAM = "R2SF_REDSHIFT_CONNECT"


class _Null:
    """Written as an unquoted empty field (COPY CSV's NULL) by a QUOTE_NONNUMERIC writer.

    Python 3.11's csv module quotes None as `""` (an empty string); a value that looks like a
    number is written unquoted, and this one's text is empty.
    """

    __slots__ = ()

    def __float__(self) -> float:
        return 0.0

    def __str__(self) -> str:
        return ""


NULL = _Null()


def _driver_connect() -> Callable[..., Any]:
    seam = os.environ.get(CONNECT_SEAM)
    if seam:
        module, _, name = seam.partition(":")
        func: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return func
    import redshift_connector

    real: Callable[..., Any] = redshift_connector.connect
    return real


def connect(**kwargs: Any) -> Any:
    """`redshift_connector.connect`, closing the driver's socket when the server refuses us.

    The driver raises from inside `Connection.__init__` without closing the socket it opened
    (a ResourceWarning, an fd leak in a long-running scheduler); its frame still holds it.
    """
    from redshift_connector.core import Connection

    try:
        return _driver_connect()(**kwargs)
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None:
            half_built = tb.tb_frame.f_locals.get("self")
            if isinstance(half_built, Connection):
                for name in ("_sock", "_usock"):
                    with contextlib.suppress(Exception):
                        getattr(half_built, name).close()
            tb = tb.tb_next
        del tb
        raise


def read_as_text(oid: int) -> bool:
    return oid >= FIRST_USER_OID or oid in REDSHIFT_ONLY_TYPES


def use_exact_transport(conn: Any) -> None:
    """Ask for every type as text except BINARY_EXACT, whatever protocol was negotiated."""
    from redshift_connector.config import FC_TEXT
    from redshift_connector.utils.type_utils import text_recv

    for oid in list(conn.redshift_types):
        if oid not in BINARY_EXACT:
            conn.redshift_types[oid] = (FC_TEXT, text_recv)
    # Types not in the table are already text: it is a defaultdict of (FC_TEXT, text_recv).


def set_socket_limits(conn: Any, read_timeout: float) -> None:
    """After connecting: wait at most `read_timeout` for the server, and give up on a send the
    peer never acknowledges (the driver's `timeout` covered the connection only)."""
    sock = conn._usock
    sock.settimeout(read_timeout)
    if hasattr(socket, "TCP_USER_TIMEOUT") and sock.family in (socket.AF_INET, socket.AF_INET6):
        from sync.warehouse import TCP_USER_TIMEOUT_MS

        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


def driver_problems() -> list[str]:
    """What of redshift_connector's internals this module reads and no longer finds."""
    problems = []
    try:
        import redshift_connector
        from redshift_connector.config import FC_BINARY, FC_TEXT
        from redshift_connector.core import Connection
        from redshift_connector.cursor import Cursor
        from redshift_connector.utils.type_utils import redshift_types, text_recv
    except ImportError as exc:
        return [f"cannot import {exc.name}: {exc}"]
    if (FC_TEXT, FC_BINARY) != (0, 1):
        problems.append("redshift_connector.config.FC_TEXT/FC_BINARY are no longer 0/1")
    default = getattr(redshift_types, "default_factory", None)
    if default is None or default() != (FC_TEXT, text_recv):
        problems.append("utils.type_utils.redshift_types is no longer a dict defaulting to text")
    for oid in BINARY_EXACT:
        fc, func = redshift_types[oid]
        if oid not in (18, 19, 25, 1042, 1043) and fc != FC_BINARY:
            problems.append(f"the driver no longer reads OID {oid} in binary ({func.__name__})")
    init = Connection.__init__.__code__.co_varnames
    for name in ("self",):
        if name not in init:
            problems.append("Connection.__init__ has no `self` local (closing a refused socket)")
    if "_enable_protocol_based_conversion_funcs" not in dir(Connection):
        problems.append("Connection._enable_protocol_based_conversion_funcs is gone")
    if "ps" not in Cursor.__init__.__code__.co_names:
        problems.append("Cursor no longer keeps its prepared statement in `ps` (type modifiers)")
    version = getattr(redshift_connector, "__version__", "?")
    return [f"redshift_connector {version}: {p}" for p in problems]


def _varbyte(v: str) -> str:
    # Redshift's VARBYTE text output is bare hex ('00ff'); bytea input wants the \\x prefix.
    return "\\x" + v


def value_encoder(oid: int, as_text: bool = False) -> Callable[[Any], Any] | None:
    """A per-value conversion a column needs before CSV (None: the csv writer's own is exact).

    Text-transported values are the server's own output (str); binary ones are int, float and
    bool, whose str() the target reads back exactly ('True' is valid boolean input).
    """
    if oid == 6551:
        return _varbyte
    return None


class CsvEncoder:
    """Rows from the driver to COPY (FORMAT csv) bytes, NULL as an unquoted empty field."""

    def __init__(self, encoders: Sequence[Callable[[Any], Any] | None]) -> None:
        self.special = [(i, f) for i, f in enumerate(encoders) if f is not None]
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")

    def encode(self, rows: Sequence[Sequence[Any]]) -> bytes:
        if self.special:
            rows = [self._convert(r) for r in rows]
        else:
            # A membership test is one C-level scan; most rows have no NULL at all.
            rows = [[NULL if v is None else v for v in r] if None in r else r for r in rows]
        self.writer.writerows(rows)
        data = self.buffer.getvalue().encode()
        self.buffer.seek(0)
        self.buffer.truncate()
        return data

    def _convert(self, row: Sequence[Any]) -> list[Any]:
        out = list(row)
        for i, f in self.special:
            if out[i] is not None:
                out[i] = f(out[i])
        return [NULL if v is None else v for v in out]


def _send(out: BinaryIO, kind: bytes, rows: int, payload: bytes) -> None:
    out.write(FRAME.pack(kind, rows, len(payload)))
    out.write(payload)
    out.flush()


def _exit_when_parent_goes(stdin: BinaryIO) -> None:
    """Read stdin to EOF (the parent closed it or died), then end this process at once."""
    with contextlib.suppress(Exception):
        while stdin.read(4096):
            pass
    os._exit(0)


def _nodes(cur: Any, conn: Any) -> int | None:
    """Compute nodes of the cluster from STV_SLICES (readable by every user), or None."""
    try:
        cur.execute("SELECT count(DISTINCT node) FROM stv_slices")
        row = cur.fetchone()
        return int(row[0]) if row and row[0] else None
    except Exception:
        return None  # not Redshift, or not allowed: the safe fetch size
    finally:
        conn.rollback()


def choose_fetch_size(requested: int | None, nodes: int | None) -> int:
    """Rows per FETCH: single-node clusters refuse more than 1,000; multi-node clusters take
    more per round trip (Amazon suggests 4,000 or more); unknown clusters get the safe 1,000."""
    if nodes == 1:
        return min(requested or SINGLE_NODE_FETCH_SIZE, SINGLE_NODE_FETCH_SIZE)
    if requested is not None:
        return requested
    return MULTI_NODE_FETCH_SIZE if nodes else SINGLE_NODE_FETCH_SIZE


class CursorRefused(Exception):
    """Redshift refused the cursor: a message that says what to do instead."""


def explain_cursor_error(text: str, fetch_size: int) -> str | None:
    if CURSOR_TOO_LARGE in text:
        return (
            f"Redshift refused the cursor: {text.strip()} Redshift materialises a cursor's whole"
            " result on the leader node and caps its size by node type; make the job"
            " incremental, split it into several jobs (e.g. by a key range) or select fewer"
            " columns (an UNLOAD-based extract is described in docs/architecture.md)"
        )
    if SINGLE_NODE_FETCH in text:
        return (
            f"Redshift refused FETCH FORWARD {fetch_size}: {text.strip()} Set fetch_size = 1000"
            " (or less) on this job, or remove fetch_size so r2sf chooses"
        )
    return None


def extract(request: dict[str, Any], out: BinaryIO) -> int:
    """Run the request's query through a server-side cursor, writing frames; returns rows."""
    problems = driver_problems()
    if problems:
        raise RuntimeError("; ".join(problems) + " (pin redshift-connector to a tested version)")
    conn = connect(**request["connect"])
    try:
        set_socket_limits(conn, float(request.get("socket_timeout") or 3660))
        use_exact_transport(conn)
        cur = conn.cursor()
        nodes = _nodes(cur, conn)
        fetch_size = choose_fetch_size(request.get("fetch_size"), nodes)
        timeout_ms = int(request.get("statement_timeout") or 3600) * 1000
        # SET is transactional: these open the transaction the cursor lives in.
        cur.execute(f"SET statement_timeout TO {timeout_ms}")
        cur.execute("SET timezone TO 'UTC'")
        # Float text with every significant digit (17 for FLOAT8; 2 is Redshift's maximum), so
        # a fingerprint over text forms (sync/fingerprint.py) tells apart floats a bit apart.
        cur.execute("SET extra_float_digits TO 2")
        cur.execute("SET datestyle TO 'ISO, MDY'")  # Redshift's default: ISO output
        args = request["args"] or None
        not_null = set()
        if request.get("table"):
            # information_schema works on Redshift and PostgreSQL alike.
            cur.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND table_name = %s AND is_nullable = 'NO'",
                tuple(request["table"]),
            )
            not_null = {r[0] for r in cur.fetchall()}
        if request.get("describe_only"):
            cur.execute(f"SELECT * FROM ({request['sql']}) AS r2sf_d LIMIT 0", args)
        else:
            cur.execute("DECLARE r2sf_cur CURSOR FOR " + request["sql"], args)
        fetch = f"FETCH FORWARD {int(fetch_size)} FROM r2sf_cur"
        try:
            if not request.get("describe_only"):
                cur.execute(fetch)
        except Exception as exc:
            why = explain_cursor_error(str(exc), fetch_size)
            if why:
                raise CursorRefused(why) from None
            raise
        # The description says the column types with the first rows; the type modifiers
        # (lengths, precision and scale) are in the row description behind it.
        row_desc = cur.ps["row_desc"] if cur.ps else []
        columns = [
            [name, int(oid), int(rd.get("type_modifier", -1))]
            for (name, oid, *_), rd in zip(cur.description or [], row_desc, strict=False)
        ]
        for c in columns:
            c.append(c[0] in not_null)
        described = {"columns": columns, "nodes": nodes, "fetch_size": fetch_size}
        _send(out, COLUMNS, 0, json.dumps(described).encode())
        if request.get("describe_only"):
            conn.rollback()
            return 0
        encoder = CsvEncoder([value_encoder(c[1]) for c in columns])
        total = 0
        while True:
            rows = cur.fetchall()
            if not rows:
                break
            total += len(rows)
            _send(out, DATA, len(rows), encoder.encode(rows))
            try:
                cur.execute(fetch)
            except Exception as exc:
                why = explain_cursor_error(str(exc), fetch_size)
                if why:
                    raise CursorRefused(why) from None
                raise
        cur.execute("CLOSE r2sf_cur")
        conn.rollback()
        return total
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def main() -> int:
    stdin = sys.stdin.buffer
    out = sys.stdout.buffer
    request = json.loads(stdin.readline())
    threading.Thread(target=_exit_when_parent_goes, args=(stdin,), daemon=True).start()
    try:
        total = extract(request, out)
    except BrokenPipeError:
        return 1
    except Exception as exc:
        name = type(exc).__name__
        transient = isinstance(exc, OSError) or name in _TRANSIENT_NAMES
        text = str(exc) or name
        if isinstance(exc, socket.timeout | TimeoutError):
            text = f"no answer from the warehouse within the socket timeout ({text})"
        if os.environ.get("R2SF_DEBUG"):
            traceback.print_exc()
        err = {"type": name, "message": text, "transient": transient}
        with contextlib.suppress(OSError):
            _send(out, ERROR, 0, json.dumps(err).encode())
        return 1
    _send(out, END, total, b"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
