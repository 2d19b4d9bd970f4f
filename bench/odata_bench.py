"""Side-by-side OData benchmark: r2sf against SAP CAP on the same TICKIT data, driven by wrk.

Loads the data, starts both servers, checks every Salesforce-shaped request answers 200 and that
both servers agree, then measures req/s, p50/p99 and peak RSS per request and writes the figures
to bench/out/odata-<timestamp>.json. It reports; it never asserts, and always exits 0 once run.

    .venv/bin/python bench/odata_bench.py [--rows N] [--duration S] [--no-cap | --no-r2sf]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/ is a directory of scripts, not a package
    OUT,
    PEERS,
    REPO,
    RssSampler,
    WrkResult,
    ensure_tickit,
    ensure_wrk,
    libpq_env,
    log,
    mib,
    run_wrk,
    tree_rss,
    with_database,
)

CREDENTIALS = ("bench", "bench")
AUTH_HEADER = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()
CAP_PORT = 4004
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


# ---------------------------------------------------------------- request shapes


@dataclass(frozen=True)
class Shape:
    key: str
    title: str
    resource: str
    params: tuple[tuple[str, str], ...] = ()
    # e2: follow this many nextLinks from the first page and bench the last link.
    follow: int = 0


JAZZ = (
    "contains(catname,'Jazz') eq true or contains(catgroup,'Jazz') eq true"
    " or contains(catdesc,'Jazz') eq true"
)
SHAPES = (
    Shape(
        "a",
        "list view with exact $count",
        "Sales",
        (("$select", "salesid,pricepaid"), ("$count", "true"), ("$top", "26")),
    ),
    Shape(
        "b",
        "filter on indexed column + count",
        "Sales",
        (
            ("$filter", "eventid eq 100"),
            ("$select", "salesid,pricepaid,qtysold"),
            ("$count", "true"),
            ("$top", "26"),
        ),
    ),
    Shape("c", "entity by key", "Sales(123456)"),
    Shape(
        "d",
        "Salesforce search (contains ... eq true)",
        "Category",
        (
            ("$select", "catid,catname,catdesc"),
            ("$count", "true"),
            ("$filter", JAZZ),
            ("$top", "25"),
        ),
    ),
    Shape(
        "e1",
        "$skip=50000",
        "Sales",
        (("$select", "salesid,pricepaid"), ("$skip", "50000"), ("$top", "26")),
    ),
    Shape("e2", "nextLink page ~50 deep", "Sales", (("$select", "salesid,pricepaid"),), follow=50),
)
TARGET_SHAPES = ("b", "c")  # issue 2: r2sf >= 2x CAP and p99 < 20 ms on these
TARGET_RATIO = 2.0
TARGET_P99_MS = 20.0


def encode_query(params: tuple[tuple[str, str], ...], space: str) -> str:
    """Encode like Salesforce Connect: `$`, commas and parentheses as is, quotes as %27, spaces
    as `space` (Salesforce sends `+`; CAP's URL parser rejects `+`, so it gets %20)."""
    pairs = []
    for name, value in params:
        encoded = quote(value, safe="$(),=:/*")
        if space != "%20":
            encoded = encoded.replace("%20", space)
        pairs.append(f"{name}={encoded}")
    return "&".join(pairs)


# ---------------------------------------------------------------- servers


@dataclass
class Target:
    name: str
    root: str  # service root, ending in "/"
    pid: int
    space: str
    rename: dict[str, str] = field(default_factory=dict)
    baseline_rss: int = 0
    urls: dict[str, str] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def url(self, shape: Shape) -> str:
        params = tuple((k, self._renamed(v)) for k, v in shape.params)
        query = encode_query(params, self.space)
        return self.root + self._renamed(shape.resource) + (f"?{query}" if query else "")

    def _renamed(self, text: str) -> str:
        if not self.rename:
            return text
        return re.sub(r"[A-Za-z_]\w*", lambda m: self.rename.get(m.group(0), m.group(0)), text)


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


@contextlib.contextmanager
def r2sf_server(db_url: str, workers: int, port: int, stamp: str) -> Iterator[Target]:
    workdir = Path(tempfile.mkdtemp(prefix="r2sf-bench-"))
    config = workdir / "r2sf.toml"
    config.write_text(R2SF_TOML)
    logfile = OUT / f"r2sf-{stamp}.log"
    command = [str(REPO / ".venv/bin/r2sf"), "--config", str(config), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = dict(os.environ, DATABASE_URL=db_url, ODATA_CREDENTIALS=":".join(CREDENTIALS))
    log(f"starting r2sf: {' '.join(command)} (log {logfile})")
    with logfile.open("wb") as out:
        # Own session so the master and its workers can be stopped together by our own pid.
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
        except RuntimeError as exc:
            tail = logfile.read_text(errors="replace")[-3000:]
            message = f"r2sf did not start: {exc}\n--- {logfile} (tail) ---\n{tail}"
            raise RuntimeError(message) from exc
        root = f"http://127.0.0.1:{port}/odata/v4/"
        yield Target("r2sf", root, proc.pid, space="+")
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


@contextlib.contextmanager
def cap_server(server_url: str, db: str, rows: int, cap_dir: Path) -> Iterator[Target]:
    env = dict(os.environ, **libpq_env(server_url), PGDB=db, ROWS=str(rows), CAP_DIR=str(cap_dir))
    env["PORT"] = str(CAP_PORT)
    pidfile = cap_dir / "cap.pid"
    already = pidfile.exists() and _alive(int(pidfile.read_text().strip() or 0))
    log(f"CAP setup in {cap_dir} (npm install only the first time)")
    subprocess.run(["bash", str(PEERS / "cap-setup.sh")], env=env, check=True, stdout=sys.stderr)
    subprocess.run(["bash", str(PEERS / "cap-start.sh")], env=env, check=True, stdout=sys.stderr)
    if already:
        log("CAP was already running before this run: leaving it running afterwards")
    try:
        root = f"http://127.0.0.1:{CAP_PORT}/odata/v4/tickit/"
        yield Target("cap", root, int(pidfile.read_text().strip()), space="%20")
    finally:
        if not already:
            subprocess.run(["bash", str(PEERS / "cap-stop.sh")], env=env, stdout=sys.stderr)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- checks


def property_names(client: httpx.Client, root: str) -> set[str]:
    response = client.get(root + "$metadata", headers={"Accept": "application/xml"})
    response.raise_for_status()
    tree = etree.fromstring(response.content)
    found = tree.xpath("//*[local-name()='Property']/@Name")
    return {str(p) for p in found} if isinstance(found, list) else set()


def map_names(target: Target, client: httpx.Client) -> None:
    """Use each server's own spelling of the TICKIT column names (case-insensitively matched)."""
    logical = {"salesid", "pricepaid", "qtysold", "eventid", "catid", "catname", "catgroup"}
    logical |= {"catdesc"}
    try:
        names = property_names(client, target.root)
    except (httpx.HTTPError, etree.XMLSyntaxError) as exc:
        log(f"{target.name}: cannot read $metadata ({exc}); using the column names as they are")
        return
    by_lower = {n.lower(): n for n in names}
    for name in logical:
        actual = by_lower.get(name)
        if actual is None:
            log(f"{target.name}: $metadata has no property like {name!r}")
        elif actual != name:
            target.rename[name] = actual


def resolve_url(target: Target, shape: Shape, client: httpx.Client) -> str:
    url = target.url(shape)
    for _ in range(shape.follow):
        response = client.get(url)
        response.raise_for_status()
        link = response.json().get("@odata.nextLink")
        if not link:
            raise RuntimeError(f"{target.name}: no @odata.nextLink after {url}")
        url = urljoin(url, link)  # CAP's nextLink is relative to the request URL
    return url


def normalise(value: Any) -> Any:
    """Make equal data compare equal across servers: decimals by value, instants by time."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if not k.startswith("@")}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(str(value))
        # normalize() alone writes 10 as 1E+1; keep whole numbers whole for readable warnings.
        return number.quantize(Decimal(1)) if number == number.to_integral() else number.normalize()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)", value):
        return datetime.fromisoformat(value)
    return value


def summary(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        rows = body["value"]
        return {
            "count": body.get("@odata.count"),
            "rows": len(rows),
            "first": normalise(rows[0]) if rows else None,
            "next": "@odata.nextLink" in body,
        }
    return {"entity": normalise(body)}


def check(target: Target, client: httpx.Client) -> None:
    """Fetch every shape once: status, size, and a summary to compare with the other server."""
    for shape in SHAPES:
        entry: dict[str, Any] = {}
        try:
            url = resolve_url(target, shape, client)
            target.urls[shape.key] = url
            response = client.get(url)
            entry["status"] = response.status_code
            entry["bytes"] = len(response.content)
            if response.status_code == 200:
                entry["summary"] = summary(json.loads(response.content, parse_float=Decimal))
            else:
                entry["error"] = response.text[:300]
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            entry["status"] = None
            entry["error"] = str(exc)[:300]
        if target.space != "+" and " " in "".join(v for _, v in shape.params):
            # Record what this server answers to the form Salesforce really sends.
            plus_url = Target(target.name, target.root, target.pid, "+", target.rename).url(shape)
            with contextlib.suppress(httpx.HTTPError):
                entry["status_with_plus_spaces"] = client.get(plus_url).status_code
        target.checks[shape.key] = entry
        status = entry["status"]
        plus = entry.get("status_with_plus_spaces")
        note = f" (Salesforce '+' spaces: {plus})" if plus else ""
        log(f"{target.name} ({shape.key}) {status}{note} {target.urls.get(shape.key, '')}")
        if status != 200:
            log(f"  !! {target.name} ({shape.key}) does not answer 200: {entry.get('error')}")


def compare(targets: list[Target]) -> list[str]:
    if len(targets) < 2:
        return []
    left, right = targets
    warnings = []
    for shape in SHAPES:
        a = left.checks.get(shape.key, {}).get("summary")
        b = right.checks.get(shape.key, {}).get("summary")
        if a is None or b is None:
            continue
        for part in ("count", "rows", "first", "entity"):
            if a.get(part) != b.get(part):
                warnings.append(
                    f"MISMATCH ({shape.key}) {part}: {left.name}={a.get(part)!r}"
                    f" {right.name}={b.get(part)!r}"
                )
    return warnings


# ---------------------------------------------------------------- measuring


def measure(targets: list[Target], args: argparse.Namespace) -> None:
    """One wrk run per request and server, alternating servers request by request so that the
    load other users put on a shared machine falls on both sides of each ratio alike."""
    headers = {"Authorization": AUTH_HEADER, "Accept": "application/json"}
    load = {"connections": args.connections, "threads": args.threads}
    for target in targets:
        target.baseline_rss = tree_rss(target.pid)
    for shape in SHAPES:
        for target in targets:
            if target.checks.get(shape.key, {}).get("status") != 200:
                target.results[shape.key] = {"error": "not measured: pre-check did not answer 200"}
                continue
            url = target.urls[shape.key]
            if args.warmup > 0:
                run_wrk(url, duration=args.warmup, headers=headers, **load)
            with RssSampler(target.pid) as rss:
                result = run_wrk(url, duration=args.duration, headers=headers, **load)
            target.results[shape.key] = _figures(result, rss.peak)
            target.results[shape.key]["loadavg_1min_after"] = os.getloadavg()[0]
            log(f"{target.name} ({shape.key}) {_line(target.results[shape.key])}")


def _figures(result: WrkResult, peak_rss: int) -> dict[str, Any]:
    figures = result.as_dict()
    figures["peak_rss"] = peak_rss
    if not result.clean:
        figures["error"] = (
            f"{result.non_2xx} non-2xx of {result.requests}, socket errors {result.socket_errors}"
        )
    return figures


def _line(r: dict[str, Any]) -> str:
    if "rps" not in r:
        return str(r.get("error", ""))
    if r.get("error"):
        return f"ERROR {r['error']}"
    return f"{r['rps']:,.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"


# ---------------------------------------------------------------- report


def _cell(r: dict[str, Any] | None, field_name: str) -> str:
    if r is None:
        return "-"
    if r.get("error"):
        return "ERR"
    value = r.get(field_name)
    if value is None:
        return "-"
    return f"{value:,.0f}" if field_name == "rps" else f"{value:.2f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def report_checks(targets: list[Target]) -> None:
    rows = []
    for shape in SHAPES:
        for t in targets:
            entry = t.checks.get(shape.key, {})
            found = entry.get("summary", {})
            rows.append(
                [
                    shape.key,
                    t.name,
                    str(entry.get("status")),
                    str(entry.get("bytes", "-")),
                    str(found.get("rows", 1 if "entity" in found else "-")),
                    "-" if found.get("count") is None else str(found["count"]),
                    str(entry.get("status_with_plus_spaces", "")),
                ]
            )
    print_table(
        "pre-check (one request each)",
        ["req", "server", "status", "bytes", "rows", "@odata.count", "status with '+' spaces"],
        rows,
    )


def report(targets: list[Target], args: argparse.Namespace) -> dict[str, Any]:
    for t in targets:
        rows = []
        for shape in SHAPES:
            res = t.results.get(shape.key, {})
            rows.append(
                [
                    shape.key,
                    shape.title,
                    _cell(res, "rps"),
                    _cell(res, "p50_ms"),
                    _cell(res, "p99_ms"),
                    str(res.get("non_2xx", "-")),
                    mib(res.get("peak_rss")),
                    res.get("error", ""),
                ]
            )
        print_table(
            f"{t.name}  {t.root}  (wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s;"
            f" idle RSS {mib(t.baseline_rss)})",
            ["req", "shape", "req/s", "p50 ms", "p99 ms", "non-2xx", "peak RSS", "error"],
            rows,
        )
    by_name = {t.name: t for t in targets}
    comparison: list[dict[str, Any]] = []
    targets_met: dict[str, Any] = {}
    if "r2sf" in by_name and "cap" in by_name:
        ours, cap = by_name["r2sf"].results, by_name["cap"].results
        rows = []
        for shape in SHAPES:
            r: dict[str, Any] | None = ours.get(shape.key)
            c: dict[str, Any] | None = cap.get(shape.key)
            ratio = None
            if r and c and not r.get("error") and not c.get("error") and c.get("rps"):
                ratio = r["rps"] / c["rps"]
            comparison.append({"shape": shape.key, "ratio_r2sf_over_cap": ratio})
            rows.append(
                [
                    shape.key,
                    _cell(r, "rps"),
                    _cell(c, "rps"),
                    "-" if ratio is None else f"{ratio:.2f}x",
                    _cell(r, "p50_ms"),
                    _cell(c, "p50_ms"),
                    _cell(r, "p99_ms"),
                    _cell(c, "p99_ms"),
                    mib((r or {}).get("peak_rss")),
                    mib((c or {}).get("peak_rss")),
                ]
            )
        print_table(
            "r2sf vs CAP",
            [
                "req",
                "r2sf req/s",
                "CAP req/s",
                "ratio",
                "r2sf p50",
                "CAP p50",
                "r2sf p99",
                "CAP p99",
                "r2sf RSS",
                "CAP RSS",
            ],
            rows,
        )
        print(
            f"\nissue 2 targets (r2sf >= {TARGET_RATIO:g}x CAP, p99 < {TARGET_P99_MS:g} ms"
            f" at {args.connections} connections):"
        )
        for key in TARGET_SHAPES:
            ratio = next(x["ratio_r2sf_over_cap"] for x in comparison if x["shape"] == key)
            p99 = (
                (ours.get(key) or {}).get("p99_ms") if not ours.get(key, {}).get("error") else None
            )
            ratio_ok = ratio is not None and ratio >= TARGET_RATIO
            p99_ok = p99 is not None and p99 < TARGET_P99_MS
            targets_met[key] = {
                "ratio": ratio,
                "ratio_met": ratio_ok,
                "p99_ms": p99,
                "p99_met": p99_ok,
            }
            ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
            p99_text = "-" if p99 is None else f"{p99:.2f} ms"
            print(
                f"  ({key}) ratio {ratio_text} {'MET' if ratio_ok else 'MISSED'};"
                f"  p99 {p99_text} {'MET' if p99_ok else 'MISSED'}"
            )
    return {"comparison": comparison, "targets": targets_met}


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--server",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server URL (an admin database on it)",
    )
    p.add_argument(
        "--embedded",
        action="store_true",
        help="start a private pgserver (data kept in bench/out/pgdata) instead",
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="sales rows (default 1,000,000)")
    p.add_argument("--db", default="r2sf_bench", help="database for r2sf")
    p.add_argument(
        "--cap-db",
        default="peer_cap",
        help="database for CAP (same generated data; CAP adds its views there)",
    )
    p.add_argument("--cap-dir", type=Path, default=OUT / "cap", help="CAP project directory")
    p.add_argument("--workers", type=int, default=2, help="r2sf workers")
    p.add_argument("--port", type=int, default=0, help="r2sf port (default: a free one)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk first")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-cap", action="store_true", help="skip CAP")
    p.add_argument("--no-r2sf", action="store_true", help="skip r2sf")
    p.add_argument("--check-only", action="store_true", help="pre-checks only, no wrk runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not args.check_only:
        ensure_wrk()
    record: dict[str, Any] = {
        "started": stamp,
        "command": " ".join([sys.executable, *sys.argv]),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
            "python": platform.python_version(),
        },
        "git": _git_head(),
        "rows": args.rows,
        "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency",
        "failures": [],
    }
    with contextlib.ExitStack() as stack:
        server_url = args.server
        if args.embedded:
            import pgserver.postgres_server as pgserver

            datadir = OUT / "pgdata"
            datadir.mkdir(parents=True, exist_ok=True)
            server = pgserver.get_server(datadir, cleanup_mode="stop")
            stack.callback(server.cleanup)
            server_url = server.get_uri()
            log(f"embedded PostgreSQL at {server_url}")
        record["server"] = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", server_url)

        targets: list[Target] = []
        if not args.no_r2sf:
            record["r2sf_data_md5"] = ensure_tickit(server_url, args.db, args.rows)
        if not args.no_cap:
            record["cap_data_md5"] = ensure_tickit(server_url, args.cap_db, args.rows)
        if (
            not args.no_r2sf
            and not args.no_cap
            and record["r2sf_data_md5"] != record["cap_data_md5"]
        ):
            log("WARNING: the two databases hold different data (checksums differ)")
            record["failures"].append("data checksums differ between r2sf and CAP databases")
        if not args.no_r2sf:
            try:
                db_url = with_database(server_url, args.db)
                port = args.port or free_port()
                targets.append(stack.enter_context(r2sf_server(db_url, args.workers, port, stamp)))
            except (RuntimeError, OSError) as exc:
                log(str(exc))
                record["failures"].append(f"r2sf: {str(exc).splitlines()[0]}")
        if not args.no_cap:
            try:
                targets.append(
                    stack.enter_context(
                        cap_server(server_url, args.cap_db, args.rows, args.cap_dir)
                    )
                )
            except (subprocess.CalledProcessError, OSError) as exc:
                log(f"CAP failed: {exc}")
                record["failures"].append(f"cap: {exc}")

        auth = httpx.BasicAuth(*CREDENTIALS)
        with httpx.Client(
            auth=auth, timeout=60.0, headers={"Accept": "application/json"}
        ) as client:
            for t in targets:
                map_names(t, client)
                check(t, client)
        mismatches = compare(targets)
        for warning in mismatches:
            log(f"WARNING {warning}")
        record["mismatches"] = mismatches

        if not args.check_only:
            busy = os.getloadavg()[0]
            if busy > (os.cpu_count() or 1) / 2:
                log(
                    f"WARNING: load average {busy:.1f} on {os.cpu_count()} cores before measuring:"
                    " other work competes for the CPU, and it takes more from single-process CAP"
                    " than from r2sf's several workers"
                )
            measure(targets, args)
            record["loadavg_after"] = os.getloadavg()
        report_checks(targets)
        for warning in mismatches:
            print(warning)
        if not args.check_only:
            record.update(report(targets, args))
        record["servers"] = {
            t.name: {
                "root": t.root,
                "space_encoding": t.space,
                "renamed": t.rename,
                "idle_rss": t.baseline_rss,
                "urls": t.urls,
                "checks": t.checks,
                "results": {
                    k: {f: v for f, v in r.items() if f != "raw"} for k, r in t.results.items()
                },
            }
            for t in targets
        }
    path = OUT / f"odata-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"\nresults: {path}")
    for failure in record["failures"]:
        print(f"FAILED: {failure}")
    return 0


def _git_head() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return str(done.stdout).strip()


if __name__ == "__main__":
    sys.exit(main())
