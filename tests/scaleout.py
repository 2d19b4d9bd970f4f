"""Real parts for the scale-out tests: PgBouncer in transaction mode, a streaming replica, and
`r2sf serve` processes.

- `pgbouncer(server_url)`: Debian's `pgbouncer` (installed by .ci/run) in front of a server, in
  transaction mode, on a free port, with its own ini and userlist in a temp dir.
- `primary_with_replica()`: a throwaway primary (initdb/pg_ctl in a temp dir, never the shared
  test server) and a replica built from it with `pg_basebackup -R`, streaming on its own port.

Both raise `Unavailable` with the reason when the binaries are missing, for the fixtures to skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit


class Unavailable(Exception):
    """A part a test needs is not installed here (the reason says which and how to get it)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 30 s")


def _unprivileged_user() -> str | None:
    """PgBouncer and PostgreSQL refuse to run as root: the user to run them as, or None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise Unavailable("running as root and there is no 'postgres' user to run as") from None


def _hand_over(path: Path, user: str | None) -> None:
    if user is not None:
        shutil.chown(path, user)
        for p in path.rglob("*"):
            shutil.chown(p, user)


def _as(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


# -- PgBouncer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bouncer:
    port: int
    version: str

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )
    if found is None:
        raise Unavailable(
            "pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run does it)"
        )
    return found


@contextmanager
def pgbouncer(server_url: str, *, pool_size: int = 4) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of the server of `server_url` (trust auth)."""
    binary = pgbouncer_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    parts = urlsplit(server_url)
    params = dict(parse_qsl(parts.query))
    host = params.get("host") or parts.hostname or "127.0.0.1"
    user = _unprivileged_user()
    if user is not None and host.startswith("/"):
        # A unix socket (the embedded server): run as the user who owns its directory.
        user = pwd.getpwuid(os.stat(host).st_uid).pw_name
    port = parts.port or 5432
    login = parts.username or "postgres"
    with tempfile.TemporaryDirectory(prefix="r2sf-pgbouncer-") as tmp:
        d = Path(tmp)
        listen = free_port()
        (d / "userlist.txt").write_text(f'"{login}" ""\n')
        (d / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={host} port={port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {listen}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {d / 'userlist.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 500",
                    # As Heroku's pooler: the usual driver extras are ignored, the rest refused.
                    "ignore_startup_parameters = extra_float_digits",
                    f"logfile = {d / 'pgbouncer.log'}",
                    f"pidfile = {d / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        _hand_over(d, user)
        log = d / "pgbouncer.log"
        proc = subprocess.Popen(
            _as(user, [binary, str(d / "pgbouncer.ini")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(listen, proc, "pgbouncer", log)
            yield Bouncer(listen, version.splitlines()[0] if version else "pgbouncer")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- a primary and its streaming replica ---------------------------------------------------------


def postgres_bindir() -> Path:
    """The directory with initdb, pg_ctl and pg_basebackup of one PostgreSQL installation."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and all((Path(c) / b).exists() for b in ("initdb", "pg_ctl", "pg_basebackup")):
            return Path(c)
    try:  # the embedded server's own binaries (a machine with only Python)
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if all((bundled / b).exists() for b in ("initdb", "pg_ctl", "pg_basebackup")):
            return bundled
    except ImportError:
        pass
    raise Unavailable("no PostgreSQL installation with initdb, pg_ctl and pg_basebackup found")


@dataclass(frozen=True)
class Replicated:
    primary: str  # URL of the `postgres` database on the primary
    replica: str  # the same database on the replica

    def on_primary(self, database: str) -> str:
        return self.primary.rsplit("/", 1)[0] + "/" + database

    def on_replica(self, database: str) -> str:
        return self.replica.rsplit("/", 1)[0] + "/" + database


@contextmanager
def primary_with_replica() -> Iterator[Replicated]:
    bindir = postgres_bindir()
    user = _unprivileged_user()
    with tempfile.TemporaryDirectory(prefix="r2sf-replica-") as tmp:
        d = Path(tmp)
        os.chmod(d, 0o755)
        _hand_over(d, user)
        pdata, rdata, sock = d / "primary", d / "replica", d / "sock"
        p_port, r_port = free_port(), free_port()

        def run(*argv: str) -> None:
            subprocess.run(_as(user, list(argv)), check=True, capture_output=True)

        run("mkdir", "-p", str(sock))
        run(str(bindir / "initdb"), "-D", str(pdata), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = (
            f"-c listen_addresses=127.0.0.1 -k {sock} -c fsync=off -c wal_level=replica"
            " -c max_wal_senders=5 -c hot_standby=on -c max_connections=100"
        )
        run(str(bindir / "pg_ctl"), "-D", str(pdata), "-l", str(d / "primary.log"), "-w",
            "-o", f"-p {p_port} {opts}", "start")  # fmt: skip
        try:
            run(str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p_port), "-U",
                "postgres", "-D", str(rdata), "-R", "-X", "stream", "--no-sync")  # fmt: skip
            run(str(bindir / "pg_ctl"), "-D", str(rdata), "-l", str(d / "replica.log"), "-w",
                "-o", f"-p {r_port} {opts}", "start")  # fmt: skip
            try:
                yield Replicated(
                    f"postgresql://postgres@127.0.0.1:{p_port}/postgres",
                    f"postgresql://postgres@127.0.0.1:{r_port}/postgres",
                )
            finally:
                run(str(bindir / "pg_ctl"), "-D", str(rdata), "-m", "immediate", "stop")
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(pdata), "-m", "immediate", "stop")
