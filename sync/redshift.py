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
import io
import json
import os
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

# Frame: kind (1 byte), rows (uint32), payload length (uint32), payload.
FRAME = struct.Struct(">cII")
COLUMNS = b"C"  # payload: JSON [[name, type oid, type modifier, not null], ...]
DATA = b"D"  # payload: COPY ... (FORMAT csv) rows, `rows` of them
ERROR = b"E"  # payload: JSON {"type", "message", "transient"}
END = b"Z"  # rows: the total

# OIDs below this are built into every PostgreSQL; anything else (enums, domains...) and Redshift's
# own GEOMETRY, SUPER, HLLSKETCH, GEOGRAPHY and VARBYTE may not exist in the target: read as text.
FIRST_USER_OID = 16384
REDSHIFT_ONLY_OIDS = frozenset({3000, 4000, 2990, 3001, 6551})

# Types whose Python values from the driver do not print back as valid input (interval is
# misparsed, timetz loses its offset, json/arrays print as Python reprs): these columns are
# received as text (the server's own output), while staging keeps their own type.
TEXT_TRANSPORT_OIDS = frozenset(
    {114, 3802, 1186, 1266, 199, 1000, 1001, 1005, 1007, 1009, 1014, 1015, 1016, 1021, 1022,
     1028, 1115, 1182, 1183, 1185, 1187, 1231, 1270, 2951, 3807}
)  # fmt: skip

# Driver errors that mean the connection failed rather than the query.
_TRANSIENT_NAMES = frozenset({"InterfaceError", "OperationalError"})


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


def connect(**kwargs: Any) -> Any:
    """`redshift_connector.connect`, closing the driver's socket when the server refuses us.

    The driver raises from inside `Connection.__init__` without closing the socket it opened
    (a ResourceWarning, an fd leak in a long-running scheduler); its frame still holds it.
    """
    import redshift_connector
    from redshift_connector.core import Connection

    try:
        return redshift_connector.connect(**kwargs)
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
    return oid >= FIRST_USER_OID or oid in REDSHIFT_ONLY_OIDS


def _bytes(v: str | bytes | bytearray | memoryview) -> str:
    # The driver returns PostgreSQL's bytea output ('\\x00ff') as a str, which is input as is.
    return v if isinstance(v, str) else "\\x" + bytes(v).hex()


def value_encoder(oid: int, as_text: bool) -> Callable[[Any], Any] | None:
    """A per-value conversion a column needs before CSV (None: the csv writer's own is exact).

    The csv writer writes str() of each value: exact for int, Decimal (scale kept), float
    (shortest repr), datetime/date/time (microseconds, offsets) and bool ('True' is valid input).
    """
    if as_text:
        return str
    if oid == 17:  # bytea
        return _bytes
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


def extract(request: dict[str, Any], out: BinaryIO) -> int:
    """Run the request's query through a server-side cursor, writing frames; returns rows."""
    from redshift_connector.config import FC_TEXT
    from redshift_connector.utils.type_utils import text_recv

    conn = connect(**request["connect"])
    try:
        for oid in TEXT_TRANSPORT_OIDS:
            conn.redshift_types[oid] = (FC_TEXT, text_recv)
        cur = conn.cursor()
        fetch = f"FETCH FORWARD {int(request['fetch_size'])} FROM r2sf_cur"
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
        cur.execute("DECLARE r2sf_cur CURSOR FOR " + request["sql"], args)
        cur.execute(fetch)
        # The description says the column types with the first rows; the type modifiers
        # (lengths, precision and scale) are in the row description behind it.
        row_desc = cur.ps["row_desc"] if cur.ps else []
        columns = [
            [name, int(oid), int(rd.get("type_modifier", -1))]
            for (name, oid, *_), rd in zip(cur.description or [], row_desc, strict=False)
        ]
        for c in columns:
            c.append(c[0] in not_null)
        _send(out, COLUMNS, 0, json.dumps(columns).encode())
        encoder = CsvEncoder([value_encoder(c[1], read_as_text(c[1])) for c in columns])
        total = 0
        while True:
            rows = cur.fetchall()
            if not rows:
                break
            total += len(rows)
            _send(out, DATA, len(rows), encoder.encode(rows))
            cur.execute(fetch)
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
