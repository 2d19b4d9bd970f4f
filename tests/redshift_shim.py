"""A TCP shim that lets the real Amazon Redshift driver (`redshift_connector`) talk to PostgreSQL.

It drops the Redshift-only startup parameters PostgreSQL rejects, refuses SSL, and reports
`server_version` as Redshift's `8.0.2`; every other byte passes through unchanged. It is test and
benchmark tooling only: it must not interpret queries, hold results or handle authentication
itself (trust or md5 behind it; SCRAM is not supported by the driver against PostgreSQL).

Standalone: `python tests/redshift_shim.py UPSTREAM_URL [--port N]` serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import struct
import sys
import threading
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
    kept += b"\0"
    return struct.pack("!i", len(kept) + 4) + bytes(kept)


def rewrite_server_message(kind: bytes, body: bytes) -> bytes:
    if kind == b"S" and body.split(b"\0", 1)[0] == b"server_version":
        body = b"server_version\0" + REDSHIFT_SERVER_VERSION + b"\0"
    return _frame(kind, body)


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

    def __init__(self, upstream_url: str, port: int = 0, host: str = "127.0.0.1") -> None:
        self.upstream_url = upstream_url
        self.family, self.address = upstream_address(upstream_url)
        self.host = host
        self.port = port
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

    def start(self) -> RedshiftShim:
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
            if not self._startup(client, server):
                return
            back = threading.Thread(target=_pump, args=(server, client), daemon=True)
            back.start()
            _pump(client, server)
            back.join()
        except (OSError, ConnectionError) as e:
            log.debug("connection ended: %s", e)
        finally:
            self._track(client, server, add=False)
            client.close()
            server.close()

    def _startup(self, client: socket.socket, server: socket.socket) -> bool:
        """Negotiate the untyped startup phase; True when the connection should be relayed."""
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
                return False
            if code != PROTOCOL_3_0:
                raise ConnectionError(f"unsupported protocol {code}")
            server.sendall(rewrite_startup(body))
            break
        # Parse the server's messages until the first ReadyForQuery (or an error): that is
        # where `server_version` is reported, and it cannot change later (a read-only setting),
        # so after that the bytes are relayed unparsed to keep bulk fetches cheap.
        while True:
            kind, body = _recv_typed(server)
            client.sendall(rewrite_server_message(kind, body))
            if kind in (b"Z", b"E"):
                return kind == b"Z"
            if kind == b"R" and struct.unpack("!i", body[:4])[0] in _AUTH_NEEDS_ANSWER:
                # The server asks for a password (or the next SASL step): relay the answer.
                kind_c, body_c = _recv_typed(client)
                server.sendall(_frame(kind_c, body_c))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream_url", help="postgresql:// URL of the server to front")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    shim = RedshiftShim(args.upstream_url, port=args.port, host=args.host).start()
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
