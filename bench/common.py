"""Helpers shared by the benchmarks: TICKIT data, `r2sf serve` processes, wrk runs, /metrics
scrapes and RSS sampling.

They start and stop nothing they did not create and assert nothing about the figures: a
benchmark reports what it measured, it never decides pass or fail.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
# The peers (CAP scripts, tickit.sql) live beside the repository, not inside it.
SHARED = Path(__file__).resolve().parents[2] / "shared"
PEERS = SHARED / "peers"
TICKIT_SQL = PEERS / "tickit.sql"
OUT = REPO / "bench" / "out"
WRK_SCRIPTS = REPO / "bench" / "wrk"
CREDENTIALS = ("bench", "bench")
AUTH_HEADER = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()
# Sales and Category from tickit.sql, under the names Salesforce sees.
R2SF_TOML = """\
[odata]
path = "/odata/v4"
page_size = 1000
expose = ["public.*"]

[[odata.sets]]
table = "public.sales"
name = "Sales"

[[odata.sets]]
table = "public.category"
name = "Category"
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- PostgreSQL


def with_database(url: str, name: str) -> str:
    """The same server URL (host, user, a unix-socket `host=` query) naming database `name`."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def libpq_env(url: str) -> dict[str, str]:
    """PGHOST/PGPORT/PGUSER/PGPASSWORD for tools that take env, not URLs (cap-setup.sh, node)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or ""])[0] or "127.0.0.1"
    port = query.get("port", [str(parts.port or 5432)])[0]
    return {
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": unquote(parts.username or "postgres"),
        "PGPASSWORD": unquote(parts.password or ""),
    }


def psql(url: str, sql: str) -> str:
    """Run one statement with psql and return its unaligned, tuples-only output."""
    done = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def ensure_tickit(server_url: str, database: str, rows: int) -> str:
    """Create `database` if needed and load tickit.sql unless `sales` already has `rows` rows.

    Returns the checksum of the first 1,000 sales rows so callers can check two databases hold
    the same data.
    """
    name = database.replace('"', "")
    if psql(server_url, f"select 1 from pg_database where datname = '{name}'") != "1":
        log(f"creating database {name}")
        psql(server_url, f'create database "{name}"')
    url = with_database(server_url, name)
    # Two statements: a CASE around count(*) still fails to plan when the table is missing.
    have = -1
    if psql(url, "select to_regclass('public.sales') is not null") == "t":
        have = int(psql(url, "select count(*) from public.sales"))
    if have != rows:
        log(f"loading {rows:,} TICKIT rows into {name} (had {have:,}) from {TICKIT_SQL}")
        started = time.monotonic()
        subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"rows={rows}",
                "-d",
                url,
                "-f",
                str(TICKIT_SQL),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log(f"loaded in {time.monotonic() - started:.1f} s")
    else:
        log(f"{name}: public.sales already has {rows:,} rows, not reloading")
    return psql(
        url,
        "select md5(string_agg(salesid || ':' || eventid || ':' || pricepaid || ':' || saletime,"
        " ',' order by salesid)) from public.sales where salesid <= 1000",
    )


# ---------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    """Path of wrk; installs Debian's package when missing and we are root (saying so)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed: run `apt-get install -y wrk` (as root)")
    log("wrk missing: running `apt-get install -y wrk`")
    if subprocess.run(["apt-get", "install", "-y", "wrk"]).returncode != 0:
        log("install failed: running `apt-get update` and retrying")
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk still not found after apt-get install")
    return found


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def clean(self) -> bool:
        """True when every response was 2xx/3xx and no socket error or timeout happened."""
        return self.non_2xx == 0 and not any(self.socket_errors.values()) and self.rps is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Pick req/s, p50, p99, non-2xx and socket errors out of `wrk --latency` output."""
    result = WrkResult(raw=text)
    if m := re.search(r"^\s*Requests/sec:\s+([\d.]+)", text, re.M):
        result.rps = float(m.group(1))
    if m := re.search(r"^\s*50(?:\.000)?%\s+(\S+)", text, re.M):
        result.p50_ms = _duration_ms(m.group(1))
    if m := re.search(r"^\s*99(?:\.000)?%\s+(\S+)", text, re.M):
        result.p99_ms = _duration_ms(m.group(1))
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M):
        result.requests = int(m.group(1))
        result.seconds = _duration_ms(m.group(2) + m.group(3)) / 1000.0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        result.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: (.*)", text):
        for name, count in re.findall(r"(\w+) (\d+)", m.group(1)):
            result.socket_errors[name] = int(count)
    return result


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int = 16,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    script_args: list[str] | None = None,
    timeout: float | None = None,
) -> WrkResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if timeout is not None:
        command.append(f"--timeout={timeout:g}s")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + (timeout or 2) + 60
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# ---------------------------------------------------------------- memory


def _tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (uvicorn master + workers); empty once it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total = 0
    for proc in _tree(pid):
        # A worker restarting between listing and reading is skipped.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants. Unlike req/s,
    the CPU a server spends per request hardly moves when other work shares the machine."""
    total = 0.0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


class RssSampler:
    """Samples the RSS of a process tree in a thread; `peak` holds the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = tree_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


def mib(n: int | None) -> str:
    return "-" if not n else f"{n / 2**20:.0f} MB"


# ---------------------------------------------------------------- r2sf serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


@dataclass
class Served:
    """A running `r2sf serve`: its service root, base URL and the pid of its process group."""

    base: str  # http://127.0.0.1:PORT
    root: str  # base + "/odata/v4/"
    pid: int
    workers: int
    logfile: Path


@contextlib.contextmanager
def r2sf_server(
    db_url: str,
    *,
    workers: int,
    port: int,
    logfile: Path,
    cache_mb: int | None = None,
    toml: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """`r2sf serve` as a user runs it; `cache_mb` 0 means `--no-cache`, None the default size.

    Stopped with SIGTERM to its own process group (master and workers) when the block ends.
    """
    workdir = Path(tempfile.mkdtemp(prefix="r2sf-bench-"))
    config = workdir / "r2sf.toml"
    config.write_text(toml if toml is not None else R2SF_TOML)
    command = [str(REPO / ".venv/bin/r2sf"), "--config", str(config), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if cache_mb == 0:
        command.append("--no-cache")
    elif cache_mb is not None:
        command += ["--cache-mb", str(cache_mb)]
    env = dict(
        os.environ, **(env or {}), DATABASE_URL=db_url, ODATA_CREDENTIALS=":".join(CREDENTIALS)
    )
    env.pop("R2SF_CACHE_MB", None)  # the command line alone decides the mode measured
    log(f"starting r2sf: {' '.join(command)} (log {logfile})")
    with logfile.open("wb") as out:
        # Own session so the master and its workers can be stopped together by our own pid.
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{base}/healthz", proc)
        except RuntimeError as exc:
            tail = logfile.read_text(errors="replace")[-3000:]
            message = f"r2sf did not start: {exc}\n--- {logfile} (tail) ---\n{tail}"
            raise RuntimeError(message) from exc
        yield Served(base, f"{base}/odata/v4/", proc.pid, workers, logfile)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        config.unlink(missing_ok=True)
        workdir.rmdir()


# ---------------------------------------------------------------- /metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> {worker pid: {"name{other labels}": value}} (one worker's scrape)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        worker = labels.pop("worker", "")
        name = match.group(1)
        if labels:
            name += "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
        out.setdefault(worker, {})[name] = float(match.group(3))
    return out


def scrape_workers(base: str, workers: int, attempts: int = 60) -> dict[str, dict[str, float]]:
    """/metrics of every worker: each worker answers for itself, and which one answers a new
    connection is the kernel's choice, so ask on fresh connections until all have answered."""
    seen: dict[str, dict[str, float]] = {}
    for _ in range(attempts):
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{base}/metrics", auth=CREDENTIALS, timeout=5.0)
            if response.status_code == 200:
                seen.update(parse_metrics(response.text))
        if len(seen) >= workers:
            break
        time.sleep(0.01)
    return seen


def metric_sum(scrape: dict[str, dict[str, float]], name: str) -> float:
    return sum(values.get(name, 0.0) for values in scrape.values())


CACHE_COUNTERS = (
    "r2sf_cache_hits_total",
    "r2sf_cache_misses_total",
    "r2sf_cache_coalesced_total",
    "r2sf_cache_evictions_total",
    "r2sf_count_cache_hits_total",
    "r2sf_count_cache_misses_total",
)


def cache_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], workers: int
) -> dict[str, Any]:
    """Cache counters gained between two scrapes, summed over the workers seen in both."""
    common = set(before) & set(after)
    delta: dict[str, Any] = {
        name.removeprefix("r2sf_").removesuffix("_total"): int(
            sum(after[w].get(name, 0.0) - before[w].get(name, 0.0) for w in common)
        )
        for name in CACHE_COUNTERS
    }
    looked_up = delta["cache_hits"] + delta["cache_misses"]
    delta["hit_ratio"] = delta["cache_hits"] / looked_up if looked_up else None
    delta["workers_seen"] = f"{len(common)}/{workers}"
    delta["cache_entries"] = int(metric_sum(after, "r2sf_cache_entries"))
    delta["cache_bytes"] = int(metric_sum(after, "r2sf_cache_bytes"))
    return delta


def coprime_step(n: int) -> int:
    """A stride near n / golden ratio that is coprime with n: visits all of 0..n-1 once."""
    step = max(1, int(n * 0.618))
    while math.gcd(step, n) != 1:
        step += 1
    return step
