"""A TCP shim that lets the real Amazon Redshift driver (`redshift_connector`) talk to PostgreSQL.

It drops the Redshift-only startup parameters PostgreSQL rejects, refuses SSL, and reports
`server_version` as Redshift's `8.0.2`. By default every other byte passes through unchanged, as
from a cluster that does not negotiate `client_protocol_version` (the driver then reads results
as protocol 0).

`protocol="binary"` negotiates the driver's protocol as a current cluster does: the shim answers
`server_protocol_version` (the driver's `Connection.handle_PARAMETER_STATUS`) and sends row
descriptions in the extended format of protocol 1 and above (`Connection.handle_ROW_DESCRIPTION`:
schema, table, column and catalog names and a flags word after each field). The driver then asks
for results in binary for the types in its `_enable_protocol_based_conversion_funcs` table; the
shim relays PostgreSQL's binary values for the types PostgreSQL encodes as Redshift does
(`SAME_BINARY`) and refuses a binary request for any other (Redshift's NUMERIC, GEOGRAPHY... are
not PostgreSQL's bytes), recording why in `errors`.

`stand_ins` maps the OIDs of PostgreSQL types standing in for Redshift-only ones (see
`STAND_IN_TYPES_SQL`) to the OIDs a cluster announces, so the driver decodes those columns as it
would from Redshift. It is test and benchmark tooling only: it never interprets queries, holds
results or handles authentication itself (trust or md5 behind it).

Standalone: `python tests/redshift_shim.py UPSTREAM_URL [--port N] [--binary]` serves until
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("redshift_shim")

# Request codes of the untyped first messages (PostgreSQL protocol, "Message Formats").
PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# What Amazon Redshift reports; the driver parses this with `packaging.version`.
REDSHIFT_SERVER_VERSION = b"8.0.2"

# Startup parameters PostgreSQL accepts. The driver also sends `client_protocol_version`,
# `driver_version`, `os_version`, `driver_discovery_version` and, with IdP plugins,
# `plugin_name`, `idp_type`, `provider_name`, `token_type`, `identity_namespace`..., which
# PostgreSQL would reject as unknown settings, so anything not listed here is dropped.
PASSED_STARTUP_PARAMETERS = frozenset(
    {
        "user",
        "database",
        "options",
        "replication",
        "application_name",
        "client_encoding",
        "datestyle",
        "timezone",
        "search_path",
        "extra_float_digits",
    }
)

_CHUNK = 256 * 1024

# The driver's protocol versions (redshift_connector.config.ClientProtocolVersion).
EXTENDED_RESULT_METADATA = 1
BINARY = 2

# Types whose binary form is the same in PostgreSQL and Redshift: the driver's decoders for them
# (redshift_connector/utils/type_utils.py: bool_recv, int2/int4/int8_recv, float4/float8_recv,
# text_recv, date_recv_binary, time_recv_binary, timetz_recv_binary, timestamp(tz)_recv_integer)
# read PostgreSQL's send formats: big-endian integers, IEEE floats, UTF-8 text, days and
# microseconds since 2000-01-01. NUMERIC (Redshift sends a scaled 64 or 128-bit integer),
# INTERVAL (the driver reads 12 bytes), GEOGRAPHY and the rest are not.
SAME_BINARY = frozenset(
    {16, 18, 19, 20, 21, 23, 25, 26, 700, 701, 705, 1042, 1043, 1082, 1083, 1114, 1184, 1266}
)

# Redshift types PostgreSQL has not, and the OIDs a cluster announces for them (the JDBC
# driver's com.amazon.redshift.core.Oid; redshift_connector's utils/oids.py RedshiftOID).
REDSHIFT_ONLY_OIDS = {
    "super": 4000,
    "geometry": 3000,
    "geography": 3001,
    "hllsketch": 2935,
    "varbyte": 6551,
    "intervaly2m": 1188,
    "intervald2s": 1190,
}

# A PostgreSQL type per Redshift-only type, in schema `redshift`: stored and sent as the text
# the test writes, in the format a cluster's text output has (SUPER as JSON, GEOMETRY and
# GEOGRAPHY as hex EWKB, VARBYTE as bare hex, HLLSKETCH as JSON, the interval kinds as
# '1 year 2 mons' / '3 days 04:05:06.5'). Needs a superuser (LANGUAGE internal).
STAND_IN_TYPES_SQL = "CREATE SCHEMA IF NOT EXISTS redshift;\n" + "".join(
    f"""
CREATE TYPE redshift.{t};
CREATE FUNCTION redshift.{t}_in(cstring) RETURNS redshift.{t}
    AS 'textin' LANGUAGE internal IMMUTABLE STRICT;
CREATE FUNCTION redshift.{t}_out(redshift.{t}) RETURNS cstring
    AS 'textout' LANGUAGE internal IMMUTABLE STRICT;
CREATE TYPE redshift.{t} (INPUT = redshift.{t}_in, OUTPUT = redshift.{t}_out, LIKE = text);
"""
    for t in REDSHIFT_ONLY_OIDS
)
STAND_IN_OIDS_SQL = (
    "SELECT t.oid::int, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE n.nspname = 'redshift' AND t.typtype = 'b' AND t.typcategory <> 'A'"
)

# Redshift built-in functions PostgreSQL lacks, created in the upstream database when the shim
# starts, so SQL written for Redshift runs behind it. STRTOL(num_string, base) returns the
# BIGINT a string of digits in `base` spells (https://docs.aws.amazon.com/redshift/latest/dg/
# r_STRTOL.html); r2sf's fingerprints use base 16 and at most 15 digits only, which is all this
# stand-in answers for (another base is NULL here, more than 16 digits are cut, and 16 may come
# out negative, where Redshift would give its value or an error). An SQL function that
# PostgreSQL inlines: not STRICT (a strict function is inlined only when its body is strict,
# and a CASE is not) and naming its string once (an argument used twice is inlined only when
# cheap, and an MD5 is not). Called instead of inlined, it cost 30 us a row.
REDSHIFT_FUNCTIONS_SQL = """
CREATE OR REPLACE FUNCTION public.strtol(text, integer) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN $2 = 16 THEN ('x' || lpad($1, 16, '0'))::bit(64)::bigint END;
"""
# What PostgreSQL gets in the startup message besides the client's parameters: the memory a
# Redshift query has for its sorts and hash tables. A cluster gives each query its WLM slot's
# share of the node's memory (the default queue runs 5 queries at once), hundreds of MB on
# the smallest node (https://docs.aws.amazon.com/redshift/latest/dg/cm-c-defining-query-queues.html);
# PostgreSQL's 4 MB default would spill to disk what Redshift holds in memory.
UPSTREAM_SETTINGS = {"work_mem": "64MB"}


def install_redshift_functions(upstream_url: str) -> bool:
    """Create REDSHIFT_FUNCTIONS_SQL's functions upstream unless they exist; False when the
    database cannot be reached or refuses (then only queries that need them fail)."""
    import asyncio

    import asyncpg

    async def install() -> None:
        conn = await asyncpg.connect(upstream_url.replace("redshift://", "postgresql://"))
        try:
            await conn.execute(REDSHIFT_FUNCTIONS_SQL)
        finally:
            await conn.close()

    done: list[bool] = []

    def run() -> None:  # its own thread and event loop: callers may be inside one already
        try:
            asyncio.run(install())
            done.append(True)
        except Exception:  # another shim created it meanwhile, or no database: not ours to fix
            done.append(False)

    worker = threading.Thread(target=run, name="shim-install")
    worker.start()
    worker.join(30)
    return bool(done and done[0])


# Authentication requests the client answers: cleartext, MD5, SASL start, SASL continue.
_AUTH_NEEDS_ANSWER = frozenset({3, 5, 10, 11})


def upstream_address(url: str) -> tuple[int, str | tuple[str, int]]:
    """The socket family and address of the PostgreSQL server a postgresql:// URL names.

    A `host` query parameter (or a host starting with `/`) is a unix-socket directory, as the
    embedded pgserver gives: the socket is `<dir>/.s.PGSQL.<port>`.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [None])[0] or (unquote(parts.hostname) if parts.hostname else None)
    port = int(query.get("port", [None])[0] or parts.port or 5432)
    if host is None:
        host = "/var/run/postgresql"
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, port)


def upstream_database(url: str) -> str:
    path = urlsplit(url).path.lstrip("/")
    return unquote(path) or "postgres"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed during startup")
        buf += chunk
    return bytes(buf)


def _recv_untyped(sock: socket.socket) -> bytes:
    """One startup-phase message (4-byte length, no type byte), without its length."""
    (length,) = struct.unpack("!i", _recv_exact(sock, 4))
    if not 8 <= length <= 10_000:
        raise ConnectionError(f"bad startup message length {length}")
    return _recv_exact(sock, length - 4)


def _recv_typed(sock: socket.socket) -> tuple[bytes, bytes]:
    """One regular message: (type byte, body without the length)."""
    header = _recv_exact(sock, 5)
    (length,) = struct.unpack("!i", header[1:])
    return header[:1], _recv_exact(sock, length - 4)


def _frame(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def startup_parameters(body: bytes) -> dict[str, str]:
    fields = body[4:].split(b"\0")
    out = {}
    for name, value in zip(fields[0::2], fields[1::2], strict=False):
        if not name:
            break
        out[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return out


def rewrite_startup(body: bytes) -> bytes:
    """A StartupMessage body keeping only the parameters PostgreSQL understands."""
    fields = body[4:].split(b"\0")
    kept = bytearray(body[:4])
    for name, value in zip(fields[0::2], fields[1::2], strict=False):
        if not name:
            break
        if name.decode("ascii", "replace").lower() in PASSED_STARTUP_PARAMETERS:
            kept += name + b"\0" + value + b"\0"
        else:
            log.debug("dropping startup parameter %s", name.decode("ascii", "replace"))
    for setting, text in UPSTREAM_SETTINGS.items():
        kept += setting.encode() + b"\0" + text.encode() + b"\0"
    kept += b"\0"
    return struct.pack("!i", len(kept) + 4) + bytes(kept)


def rewrite_server_message(kind: bytes, body: bytes) -> bytes:
    if kind == b"S" and body.split(b"\0", 1)[0] == b"server_version":
        body = b"server_version\0" + REDSHIFT_SERVER_VERSION + b"\0"
    return _frame(kind, body)


def rewrite_row_description(body: bytes, protocol: int, stand_ins: dict[int, int]) -> bytes:
    """A RowDescription with stand-in type OIDs replaced and, from protocol 1, the extended
    fields the driver reads after each column (empty names, flags 0x1: nullable)."""
    (count,) = struct.unpack_from("!h", body)
    out = bytearray(body[:2])
    idx = 2
    for _ in range(count):
        end = body.index(b"\0", idx)
        label = body[idx:end]
        table_oid, attnum, type_oid, size, typmod, fmt = struct.unpack_from(
            "!ihihih", body, end + 1
        )
        type_oid = stand_ins.get(type_oid, type_oid)
        out += (
            label + b"\0" + struct.pack("!ihihih", table_oid, attnum, type_oid, size, typmod, fmt)
        )
        if protocol >= EXTENDED_RESULT_METADATA:
            out += b"\0\0" + label + b"\0\0" + struct.pack("!h", 1)
        idx = end + 1 + 18
    return bytes(out)


def column_types(body: bytes, stand_ins: dict[int, int]) -> list[int]:
    (count,) = struct.unpack_from("!h", body)
    oids, idx = [], 2
    for _ in range(count):
        end = body.index(b"\0", idx)
        (oid,) = struct.unpack_from("!i", body, end + 1 + 6)
        oids.append(stand_ins.get(oid, oid))
        idx = end + 1 + 18
    return oids


def bind_result_formats(body: bytes) -> tuple[str, list[int]]:
    """(statement name, result format codes) of a Bind message body."""
    idx = body.index(b"\0") + 1  # portal
    end = body.index(b"\0", idx)
    statement = body[idx:end].decode("utf-8", "replace")
    idx = end + 1
    (n,) = struct.unpack_from("!h", body, idx)
    idx += 2 + 2 * n
    (n,) = struct.unpack_from("!h", body, idx)
    idx += 2
    for _ in range(n):
        (size,) = struct.unpack_from("!i", body, idx)
        idx += 4 + max(size, 0)
    (n,) = struct.unpack_from("!h", body, idx)
    return statement, list(struct.unpack_from(f"!{n}h", body, idx + 2))


@dataclass
class _Session:
    """What the parsing relay of one connection knows: the negotiated protocol, each prepared
    statement's column types, and the Describe messages still waiting for their answer."""

    protocol: int
    stand_ins: dict[int, int]
    statements: dict[str, list[int]] = field(default_factory=dict)
    pending: deque[tuple[int, bytes, str]] = field(default_factory=deque)
    client_epoch: int = 0  # Sync and Query messages sent
    server_epoch: int = 0  # ReadyForQuery messages received


class _Messages:
    """Typed protocol messages from a socket, read in chunks."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def chunk(self) -> list[tuple[bytes, bytes, bytes]] | None:
        """The complete messages of the next chunk: (type, body, raw bytes); None at EOF."""
        data = self.sock.recv(_CHUNK)
        if not data:
            return None
        buf = self.buf + data
        out, idx = [], 0
        while len(buf) - idx >= 5:
            (length,) = struct.unpack_from("!i", buf, idx + 1)
            end = idx + 1 + length
            if end > len(buf):
                break
            out.append((buf[idx : idx + 1], buf[idx + 5 : end], buf[idx:end]))
            idx = end
        self.buf = buf[idx:]
        return out


def _statement_text(kind: bytes, body: bytes) -> str:
    """The SQL of a Query message, or of a Parse message (after its statement name)."""
    if kind == b"P":
        body = body[body.index(b"\0") + 1 :]
    return body[: body.index(b"\0")].decode("utf-8", "replace")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes until EOF, then pass the half-close on so the other side sees it too."""
    try:
        while True:
            data = src.recv(_CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class RedshiftShim:
    """Listens on 127.0.0.1 and forwards each client to the PostgreSQL at `upstream_url`.

    Use as a context manager; `host` and `port` are set once it is started.
    """

    def __init__(
        self,
        upstream_url: str,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        protocol: str = "text",
        stand_ins: dict[int, int] | None = None,
        on_query: Callable[[str], None] | None = None,
    ) -> None:
        assert protocol in ("text", "binary")
        self.upstream_url = upstream_url
        self.family, self.address = upstream_address(upstream_url)
        self.host = host
        self.port = port
        self.protocol = protocol
        self.stand_ins = dict(stand_ins or {})
        # Called with each statement's text (Parse or Query) before the server sees it, in the
        # relaying thread: a test's way to change the source between two of a client's queries.
        self.on_query = on_query
        self.errors: list[str] = []  # binary requests the shim could not honour
        self.binary_columns = 0  # result columns relayed in binary (protocol="binary")
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def url(self, user: str = "postgres", database: str | None = None, password: str = "") -> str:
        """A `redshift://` URL reaching the upstream server through this shim, SSL off."""
        auth = user + (":" + password if password else "")
        db = database or upstream_database(self.upstream_url)
        return f"redshift://{auth}@{self.host}:{self.port}/{db}?sslmode=disable"

    def drop_connections(self) -> int:
        """Cut every relayed connection at once, as a network failure would; returns how many."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(conns) // 2

    def start(self) -> RedshiftShim:
        install_redshift_functions(self.upstream_url)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="shim-accept", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            # shutdown() wakes the blocked accept(); close() alone does not on Linux.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RedshiftShim:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def serve_forever(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *socks: socket.socket, add: bool = True) -> None:
        with self._lock:
            for s in socks:
                (self._conns.add if add else self._conns.discard)(s)

    def _serve(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = socket.socket(self.family, socket.SOCK_STREAM)
        self._track(client, server)
        try:
            session = self._startup(client, server)
            if session is None:
                return
            if session.protocol == 0 and not self.stand_ins and self.on_query is None:
                back = threading.Thread(target=_pump, args=(server, client), daemon=True)
                back.start()
                _pump(client, server)
            else:
                back = threading.Thread(
                    target=self._relay_server, args=(server, client, session), daemon=True
                )
                back.start()
                self._relay_client(client, server, session)
            back.join()
        except (OSError, ConnectionError) as e:
            log.debug("connection ended: %s", e)
        finally:
            self._track(client, server, add=False)
            client.close()
            server.close()

    def _startup(self, client: socket.socket, server: socket.socket) -> _Session | None:
        """Negotiate the untyped startup phase; the session when the connection should be
        relayed."""
        protocol = 0
        while True:
            body = _recv_untyped(client)
            (code,) = struct.unpack("!i", body[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                client.sendall(b"N")
                continue
            server.connect(self.address)
            if server.family == socket.AF_INET:
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if code == CANCEL_REQUEST:
                # BackendKeyData passes through unchanged, so the key is valid upstream as is.
                server.sendall(struct.pack("!i", len(body) + 4) + body)
                return None
            if code != PROTOCOL_3_0:
                raise ConnectionError(f"unsupported protocol {code}")
            requested = startup_parameters(body).get("client_protocol_version", "0")
            if self.protocol == "binary" and requested.isdigit():
                protocol = min(int(requested), BINARY)
            server.sendall(rewrite_startup(body))
            break
        # Parse the server's messages until the first ReadyForQuery (or an error): that is
        # where `server_version` is reported, and it cannot change later (a read-only setting),
        # so after that the bytes are relayed unparsed to keep bulk fetches cheap.
        while True:
            kind, body = _recv_typed(server)
            if kind == b"Z" and protocol:
                # A cluster reports the protocol it agreed to before it is ready.
                client.sendall(_frame(b"S", b"server_protocol_version\0%d\0" % protocol))
            client.sendall(rewrite_server_message(kind, body))
            if kind in (b"Z", b"E"):
                return _Session(protocol, self.stand_ins) if kind == b"Z" else None
            if kind == b"R" and struct.unpack("!i", body[:4])[0] in _AUTH_NEEDS_ANSWER:
                # The server asks for a password (or the next SASL step): relay the answer.
                kind_c, body_c = _recv_typed(client)
                server.sendall(_frame(kind_c, body_c))

    def _relay_client(
        self, client: socket.socket, server: socket.socket, session: _Session
    ) -> None:
        """Client to server, unchanged; Describe, Sync and Bind messages are noted on the way."""
        messages = _Messages(client)
        try:
            while (batch := messages.chunk()) is not None:
                for kind, body, raw in batch:
                    if kind == b"D":
                        name = body[1:-1].decode("utf-8", "replace")
                        session.pending.append((session.client_epoch, body[:1], name))
                    elif kind == b"Q":
                        session.pending.append((session.client_epoch, b"Q", ""))
                        session.client_epoch += 1
                    elif kind == b"S":
                        session.client_epoch += 1
                    elif kind == b"B":
                        self._check_bind(body, session)
                    if self.on_query is not None and kind in (b"P", b"Q"):
                        try:
                            self.on_query(_statement_text(kind, body))
                        except Exception as exc:  # reported, as the test cannot see it here
                            self.errors.append(f"on_query raised {exc!r}")
                    server.sendall(raw)
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)

    def _check_bind(self, body: bytes, session: _Session) -> None:
        statement, formats = bind_result_formats(body)
        types = session.statements.get(statement)
        if types is None or not formats:
            return
        for i, oid in enumerate(types):
            fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
            if fmt != 1:
                continue
            if oid not in SAME_BINARY:
                why = f"binary result requested for type {oid}, which Redshift encodes differently"
                self.errors.append(why)
                raise ConnectionError(why)
            self.binary_columns += 1

    def _relay_server(
        self, server: socket.socket, client: socket.socket, session: _Session
    ) -> None:
        """Server to client: row descriptions rewritten, everything else unchanged."""
        messages = _Messages(server)
        try:
            while (batch := messages.chunk()) is not None:
                out = bytearray()
                for kind, body, raw in batch:
                    if kind == b"T":
                        self._described(session, column_types(body, session.stand_ins))
                        body = rewrite_row_description(body, session.protocol, session.stand_ins)
                        out += _frame(kind, body)
                        continue
                    if kind == b"n":
                        self._described(session, [])
                    elif kind == b"Z":
                        session.server_epoch += 1
                        while session.pending and session.pending[0][0] < session.server_epoch:
                            session.pending.popleft()
                    out += raw
                client.sendall(out)
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

    @staticmethod
    def _described(session: _Session, types: list[int]) -> None:
        """Attach a row description (or NoData) to the Describe it answers, if any."""
        pending = session.pending
        while pending and pending[0][0] < session.server_epoch:
            pending.popleft()  # skipped after an error: the server never answered them
        if not pending or pending[0][0] != session.server_epoch or pending[0][1] == b"Q":
            return  # a simple Query's rows
        _, what, name = pending.popleft()
        if what == b"S":
            session.statements[name] = types


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream_url", help="postgresql:// URL of the server to front")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--binary", action="store_true", help="negotiate the binary protocol")
    args = parser.parse_args(argv)
    protocol = "binary" if args.binary else "text"
    shim = RedshiftShim(args.upstream_url, port=args.port, host=args.host, protocol=protocol)
    shim.start()
    # One line on stdout so a parent process can read the chosen port.
    print(f"listening {shim.host} {shim.port} {shim.url()}", flush=True)
    try:
        shim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        shim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
