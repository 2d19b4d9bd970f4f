"""Side-by-side OData benchmark: SAP CAP, r2sf without its cache and r2sf with it, one run.

Loads the same TICKIT data for all, starts CAP and two `r2sf serve` processes (`--no-cache` and
cache on), checks every Salesforce-shaped request answers 200 and that the servers agree, then
drives them with wrk, server after server request by request, and prints req/s, p50/p99, non-2xx,
peak RSS and cache hits per request and mode, with the issue 2 and issue 4 targets marked MET or
MISSED. Figures go to bench/out/odata-<timestamp>.json. It reports; it never asserts.

    .venv/bin/python bench/odata_bench.py [--rows N] [--duration S] [--shapes a,b*] [--no-cap]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))
import salesforce  # bench/salesforce.py: the request shapes and their encoding
from common import (  # bench/ is a directory of scripts, not a package
    AUTH_HEADER,
    CREDENTIALS,
    OUT,
    PEERS,
    REPO,
    WRK_SCRIPTS,
    RssSampler,
    WrkResult,
    cache_delta,
    coprime_step,
    ensure_tickit,
    ensure_wrk,
    free_port,
    libpq_env,
    log,
    mib,
    psql,
    r2sf_server,
    run_wrk,
    scrape_workers,
    tree_cpu,
    tree_rss,
    with_database,
)

CAP_PORT = 4004
STRIDE_LUA = WRK_SCRIPTS / "stride.lua"
# A no-op UPDATE still fires r2sf's statement trigger: a new data version, nothing else changed.
BUMP_SQL = "update public.sales set qtysold = qtysold where salesid = 1"

# ---------------------------------------------------------------- request shapes


@dataclass(frozen=True)
class Shape:
    key: str
    title: str
    resource: str
    params: tuple[tuple[str, str], ...] = ()
    # e2: follow this many nextLinks from the first page and bench the last link.
    follow: int = 0
    # Cache-miss shapes: `__N__` in resource/params takes a new value of this sales column
    # (over its whole range in the data) on every request; measured on r2sf only.
    vary: str | None = None


JAZZ = salesforce.search("Jazz", ("catname", "catgroup", "catdesc"))
_B_PARAMS = (
    ("$filter", "eventid eq 100"),
    ("$select", "salesid,pricepaid,qtysold"),
    ("$count", "true"),
    ("$top", "26"),
)
SHAPES = (
    Shape(
        "a",
        "list view with exact $count",
        "Sales",
        (("$select", "salesid,pricepaid"), ("$count", "true"), ("$top", "26")),
    ),
    Shape("b", "filter on indexed column + count", "Sales", _B_PARAMS),
    Shape(
        "b*",
        "(b), a new eventid every request (miss)",
        "Sales",
        (("$filter", "eventid eq __N__"), *_B_PARAMS[1:]),
        vary="eventid",
    ),
    Shape("c", "entity by key", "Sales(123456)"),
    Shape("c*", "(c), a new key every request (miss)", "Sales(__N__)", vary="salesid"),
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
SHAPE_KEYS = tuple(s.key for s in SHAPES)

# issue 2: r2sf without cache >= 2x CAP and p99 < 20 ms on (b) and (c).
ISSUE2_SHAPES = ("b", "c")
ISSUE2_RATIO = 2.0
ISSUE2_P99_MS = 20.0
# issue 4: cached (a) >= 50x CAP; every cache hit >= 5,000 req/s with p99 < 10 ms; the miss
# path no slower with the cache than without.
ISSUE4_A_RATIO = 50.0
ISSUE4_HIT_RPS = 5000.0
ISSUE4_HIT_P99_MS = 10.0
ISSUE4_MISS_RATIO = 1.0

CAP, OFF, ON = "cap", "r2sf-nocache", "r2sf-cache"
# --noise-floor: a second, identical --no-cache server; off2/off shows how far two equal servers
# differ in one run, the yardstick for the on/off ratios of the miss shapes.
OFF2 = "r2sf-nocache-2"


# ---------------------------------------------------------------- servers


@dataclass
class Target:
    name: str
    root: str  # service root, ending in "/"
    pid: int
    space: str
    cache: bool = False
    base: str = ""  # r2sf: http://host:port, for /metrics
    workers: int = 0
    rename: dict[str, str] = field(default_factory=dict)
    baseline_rss: int = 0
    urls: dict[str, str] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_r2sf(self) -> bool:
        return self.name != CAP

    def url(self, shape: Shape) -> str:
        params = tuple((k, self._renamed(v)) for k, v in shape.params)
        query = salesforce.encode_query(params, self.space)
        return self.root + self._renamed(shape.resource) + (f"?{query}" if query else "")

    def _renamed(self, text: str) -> str:
        if not self.rename:
            return text
        return re.sub(r"[A-Za-z_]\w*", lambda m: self.rename.get(m.group(0), m.group(0)), text)


@contextlib.contextmanager
def r2sf_target(
    name: str, db_url: str, args: argparse.Namespace, stamp: str, *, cache: bool, workers: int
) -> Iterator[Target]:
    port = free_port()
    logfile = (
        OUT / f"{name}-{stamp}.log" if "-w" in name else OUT / f"{name}-w{workers}-{stamp}.log"
    )
    cache_mb = args.cache_mb if cache else 0
    with r2sf_server(
        db_url, workers=workers, port=port, logfile=logfile, cache_mb=cache_mb
    ) as served:
        yield Target(
            name, served.root, served.pid, "+", cache=cache, base=served.base, workers=workers
        )


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
        yield Target(CAP, root, int(pidfile.read_text().strip()), space="%20")
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


class Bumper:
    """Bumps the sales data version every `interval` seconds while active (a no-op UPDATE), so
    a cache-miss run never meets a value it already cached: within one version the stride walk
    does not repeat, and the next version makes every older entry stale."""

    def __init__(self, db_url: str, interval: float) -> None:
        self.db_url = db_url
        self.interval = interval
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            psql(self.db_url, BUMP_SQL)
            self.count += 1

    def __enter__(self) -> Bumper:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


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


def check(
    target: Target, client: httpx.Client, shapes: list[Shape], samples: dict[str, int]
) -> None:
    """Fetch every shape once (a miss shape with one sample value): status, size, a summary to
    compare with the other servers; with the cache on, fetch again and keep whether the second
    answer (a hit) equals the first."""
    for shape in shapes:
        if shape.vary and not target.is_r2sf:
            continue
        entry: dict[str, Any] = {}
        try:
            url = resolve_url(target, shape, client)
            target.urls[shape.key] = url
            if shape.vary:
                url = url.replace("__N__", str(samples[shape.key]))
            response = client.get(url)
            entry["status"] = response.status_code
            entry["bytes"] = len(response.content)
            if response.status_code == 200:
                body = json.loads(response.content, parse_float=Decimal)
                entry["summary"] = summary(body)
                entry["body"] = normalise(body)
                if target.cache:
                    again = client.get(url)
                    entry["etag"] = again.headers.get("etag")
                    entry["second_equal"] = again.content == response.content
            else:
                entry["error"] = response.text[:300]
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            entry["status"] = None
            entry["error"] = str(exc)[:300]
        if target.space != "+" and " " in "".join(v for _, v in shape.params):
            # Record what this server answers to the form Salesforce really sends.
            plus_url = Target(target.name, target.root, target.pid, "+", rename=target.rename)
            with contextlib.suppress(httpx.HTTPError):
                entry["status_with_plus_spaces"] = client.get(plus_url.url(shape)).status_code
        target.checks[shape.key] = entry
        status = entry["status"]
        plus = entry.get("status_with_plus_spaces")
        note = f" (Salesforce '+' spaces: {plus})" if plus else ""
        log(f"{target.name} ({shape.key}) {status}{note} {target.urls.get(shape.key, '')}")
        if status != 200:
            log(f"  !! {target.name} ({shape.key}) does not answer 200: {entry.get('error')}")


def compare(targets: list[Target], shapes: list[Shape]) -> list[str]:
    """CAP against each r2sf mode on count, rows and first row; the two r2sf modes against each
    other on the whole body (same code, so any difference is the cache's)."""
    by_name = {t.name: t for t in targets}
    warnings = []
    pairs = [(CAP, OFF, ("count", "rows", "first", "entity")), (CAP, ON, ("count", "rows"))]
    pairs.append((OFF, ON, ("body",)))
    for left_name, right_name, parts in pairs:
        left, right = by_name.get(left_name), by_name.get(right_name)
        if left is None or right is None:
            continue
        for shape in shapes:
            a = left.checks.get(shape.key, {})
            b = right.checks.get(shape.key, {})
            if "summary" not in a or "summary" not in b:
                continue
            for part in parts:
                x = a.get(part) if part == "body" else a["summary"].get(part)
                y = b.get(part) if part == "body" else b["summary"].get(part)
                if x != y:
                    shown_x, shown_y = repr(x)[:200], repr(y)[:200]
                    warnings.append(
                        f"MISMATCH ({shape.key}) {part}: {left.name}={shown_x}"
                        f" {right.name}={shown_y}"
                    )
    for t in targets:
        for key, entry in t.checks.items():
            if entry.get("second_equal") is False:
                warnings.append(
                    f"MISMATCH ({key}) {t.name}: the cached answer differs from the first"
                )
    return warnings


# ---------------------------------------------------------------- measuring


def run_one(
    target: Target,
    shape: Shape,
    args: argparse.Namespace,
    vary_ranges: dict[str, tuple[int, int]],
    bump: float = 0.0,
) -> dict[str, Any]:
    """Warm up, then one measured wrk run, with RSS and CPU sampled and /metrics read around
    it; `bump` (or a miss shape's `--miss-bump`) bumps the data version every so many seconds."""
    headers = {"Authorization": AUTH_HEADER, "Accept": "application/json"}
    load: dict[str, Any] = {
        "connections": args.connections,
        "threads": args.threads,
        "timeout": args.wrk_timeout,
    }
    url = target.urls[shape.key]
    bumper = Bumper(args.db_url, bump)
    if shape.vary:
        lo, hi = vary_ranges[shape.key]
        n = hi - lo + 1
        base, _, _ = url.partition("/odata/")
        template = url[len(base) :]
        script_args = [template, str(lo), str(n), str(coprime_step(n))]
        load["script"] = STRIDE_LUA
        url = base + "/"
        bumper = Bumper(args.db_url, args.miss_bump)
    if target.cache and not shape.vary:
        prime(url, target.workers)
    with bumper as bumps:
        if args.warmup > 0:
            if shape.vary:
                load["script_args"] = [*script_args, str(random.randrange(n))]
            run_wrk(url, duration=args.warmup, headers=headers, **load)
        before = scrape_workers(target.base, target.workers) if target.cache else None
        if shape.vary:
            load["script_args"] = [*script_args, str(random.randrange(n))]
        bumps_before = bumps.count
        cpu_before = tree_cpu(target.pid)
        with RssSampler(target.pid) as rss:
            result = run_wrk(url, duration=args.duration, headers=headers, **load)
        cpu = tree_cpu(target.pid) - cpu_before
        figures = _figures(result, rss.peak)
        figures["cpu_ms_per_req"] = cpu * 1000 / result.requests if result.requests else None
        if bumper.interval > 0:
            figures["version_bumps"] = bumps.count - bumps_before
    if before is not None:
        after = scrape_workers(target.base, target.workers)
        figures["cache"] = cache_delta(before, after, target.workers)
    figures["loadavg_1min_after"] = os.getloadavg()[0]
    return figures


def prime(url: str, workers: int) -> None:
    """Put a hit request into every worker's cache before it is measured: each worker has its
    own cache and wrk's connections may all land on one of them during the warm-up. Fresh
    connections are spread by the kernel; 10 per worker leave a worker unprimed with
    probability 2^-10 or less (a miss left over still shows in the hits/misses column)."""
    headers = {"Authorization": AUTH_HEADER, "Accept": "application/json"}
    for _ in range(10 * max(1, workers)):
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, headers=headers, timeout=60.0)


def measure(
    targets: list[Target],
    shapes: list[Shape],
    args: argparse.Namespace,
    vary_ranges: dict[str, tuple[int, int]],
) -> None:
    """One wrk run per request and server (`--rounds` of them), alternating servers request by
    request so that the load other users put on a shared machine falls on every side of each
    ratio alike. With several rounds (every other one in reverse server order) the run with the
    median req/s stands for the request."""
    for target in targets:
        target.baseline_rss = tree_rss(target.pid)
    for shape in shapes:
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for round_ in range(args.rounds):
            # Every other round in reverse order, so that the order itself favours no side.
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                if shape.vary and not target.is_r2sf:
                    continue
                if target.checks.get(shape.key, {}).get("status") != 200:
                    target.results[shape.key] = {
                        "error": "not measured: pre-check did not answer 200"
                    }
                    continue
                result = run_one(target, shape, args, vary_ranges)
                runs[target.name].append(result)
                log(f"{target.name} ({shape.key}) {_line(result)}")
        for target in targets:
            if runs[target.name]:
                target.results[shape.key] = _median(runs[target.name])


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median req/s; an errored run counts as the slowest. The req/s of every
    round is kept beside it."""
    ordered = sorted(runs, key=lambda r: -1.0 if r.get("error") else float(r.get("rps") or 0))
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        chosen["rounds_rps"] = [None if r.get("error") else r.get("rps") for r in runs]
        # CPU per request moves much less than req/s on a shared machine: its own median over
        # the rounds, not the figure of the run that happened to have the median req/s.
        cpus = [r["cpu_ms_per_req"] for r in runs if r.get("cpu_ms_per_req") is not None]
        chosen["rounds_cpu_ms_per_req"] = cpus
        if cpus:
            chosen["cpu_ms_per_req"] = statistics.median(cpus)
    return chosen


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
    text = f"{r['rps']:,.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
    if "cache" in r:
        text += f"  {_hits(r)}"
    return text


def _hits(r: dict[str, Any] | None) -> str:
    c = (r or {}).get("cache")
    if not c:
        return "-"
    return f"{c['cache_hits']}/{c['cache_misses']}"


# ---------------------------------------------------------------- workers: 1 vs 2


def workers_compare(db_url: str, args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    """(a) with the cache on under `--workers 1` and `--workers 2`: throughput and hit ratio,
    first with unchanged data, then with the data version bumped every second (each worker
    keeps its own cache, so each misses once per worker per version)."""
    shape = next(s for s in SHAPES if s.key == "a")
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                r2sf_target(f"r2sf-cache-w{w}", db_url, args, stamp, cache=True, workers=w)
            )
            for w in (1, 2)
        ]
        with httpx.Client(auth=httpx.BasicAuth(*CREDENTIALS), timeout=60.0) as client:
            for t in servers:
                t.urls["a"] = t.url(shape)
                client.get(t.urls["a"]).raise_for_status()
        for changing in (False, True):
            label = "bump 1/s" if changing else "unchanged"
            for t in servers:
                result = run_one(t, shape, args, {}, bump=1.0 if changing else 0.0)
                out[f"workers={t.workers} {label}"] = result
                log(f"workers={t.workers} (a) {label}: {_line(result)}")
    rows = []
    for name, r in out.items():
        c = r.get("cache", {})
        ratio = c.get("hit_ratio")
        bumps = r.get("version_bumps", 0)
        workers = int(name.split()[0].split("=")[1])
        # Computations per version per worker: misses minus those that waited for an identical
        # request already running. 1 when concurrent misses of one key were coalesced; up to
        # the connection count when every waiting request computes the answer itself.
        computed = c.get("cache_misses", 0) - c.get("cache_coalesced", 0)
        per = computed / (bumps * workers) if bumps else None
        r["computations_per_version_per_worker"] = per
        rows.append(
            [
                name,
                _cell(r, "rps"),
                _cell(r, "p50_ms"),
                _cell(r, "p99_ms"),
                str(r.get("non_2xx", "-")),
                _hits(r),
                "-" if ratio is None else f"{ratio:.4f}",
                str(bumps),
                "-" if per is None else f"{per:.1f}",
                mib(r.get("peak_rss")),
            ]
        )
    print_table(
        f"(a) with the cache on, 1 vs 2 workers (wrk -c{args.connections} -d{args.duration:g}s)",
        [
            "workers",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "hits/misses",
            "hit ratio",
            "version bumps",
            "computed/version/worker",
            "peak RSS",
        ],
        rows,
    )
    return out


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


def report_checks(targets: list[Target], shapes: list[Shape]) -> None:
    rows = []
    for shape in shapes:
        for t in targets:
            if shape.key not in t.checks:
                continue
            entry = t.checks[shape.key]
            found = entry.get("summary", {})
            second = entry.get("second_equal")
            rows.append(
                [
                    shape.key,
                    t.name,
                    str(entry.get("status")),
                    str(entry.get("bytes", "-")),
                    str(found.get("rows", 1 if "entity" in found else "-")),
                    "-" if found.get("count") is None else str(found["count"]),
                    "-" if second is None else ("same" if second else "DIFFERENT"),
                    str(entry.get("status_with_plus_spaces", "")),
                ]
            )
    if rows:
        print_table(
            "pre-check (one request each; cache on: fetched twice)",
            [
                "req",
                "server",
                "status",
                "bytes",
                "rows",
                "@odata.count",
                "2nd (hit)",
                "status with '+' spaces",
            ],
            rows,
        )


def _ok(r: dict[str, Any] | None) -> dict[str, Any] | None:
    return r if r and not r.get("error") and r.get("rps") else None


def _ratio(x: dict[str, Any] | None, y: dict[str, Any] | None) -> float | None:
    x, y = _ok(x), _ok(y)
    return x["rps"] / y["rps"] if x and y else None


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("MET" if met else "MISSED")


def report(targets: list[Target], shapes: list[Shape], args: argparse.Namespace) -> dict[str, Any]:
    for t in targets:
        rows = []
        for shape in shapes:
            if shape.key not in t.results:
                continue
            res = t.results[shape.key]
            rows.append(
                [
                    shape.key,
                    shape.title,
                    _cell(res, "rps"),
                    _cell(res, "p50_ms"),
                    _cell(res, "p99_ms"),
                    _cell(res, "cpu_ms_per_req"),
                    str(res.get("non_2xx", "-")),
                    mib(res.get("peak_rss")),
                    _hits(res),
                    res.get("error", ""),
                ]
            )
        if rows:
            print_table(
                f"{t.name}  {t.root}  (wrk -t{args.threads} -c{args.connections}"
                f" -d{args.duration:g}s; idle RSS {mib(t.baseline_rss)})",
                [
                    "req",
                    "shape",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "cpu ms/req",
                    "non-2xx",
                    "peak RSS",
                    "hits/misses",
                    "error",
                ],
                rows,
            )
    results = {t.name: t.results for t in targets}
    cap, off, on = results.get(CAP, {}), results.get(OFF, {}), results.get(ON, {})
    off2 = results.get(OFF2, {})
    comparison: list[dict[str, Any]] = []
    rows = []
    for shape in shapes:
        c, f, n = cap.get(shape.key), off.get(shape.key), on.get(shape.key)
        entry: dict[str, Any] = {
            "shape": shape.key,
            "nocache_over_cap": _ratio(f, c),
            "cache_over_cap": _ratio(n, c),
            "cache_over_nocache": _ratio(n, f),
        }
        if off2:
            entry["nocache2_over_nocache"] = _ratio(off2.get(shape.key), f)
        comparison.append(entry)
        rows.append(
            [
                shape.key,
                _cell(c, "rps"),
                _cell(f, "rps"),
                _cell(n, "rps"),
                _x(entry["nocache_over_cap"]),
                _x(entry["cache_over_cap"]),
                _x(entry["cache_over_nocache"]),
                _cell(c, "p99_ms"),
                _cell(f, "p99_ms"),
                _cell(n, "p99_ms"),
                _cell(f, "cpu_ms_per_req"),
                _cell(n, "cpu_ms_per_req"),
                mib((c or {}).get("peak_rss")),
                mib((f or {}).get("peak_rss")),
                mib((n or {}).get("peak_rss")),
                _hits(n),
            ]
        )
    print_table(
        "side by side: req/s, ratios, p99 ms, r2sf CPU ms per request, peak RSS"
        " (off = --no-cache, on = cache)",
        [
            "req",
            "CAP",
            "off",
            "on",
            "off/CAP",
            "on/CAP",
            "on/off",
            "p99 CAP",
            "p99 off",
            "p99 on",
            "cpu off",
            "cpu on",
            "RSS CAP",
            "RSS off",
            "RSS on",
            "on hits/misses",
        ],
        rows,
    )
    if off2:
        print(
            "\nnoise floor: req/s of a second, identical --no-cache server over the first's, "
            + ", ".join(f"({e['shape']}) {_x(e.get('nocache2_over_nocache'))}" for e in comparison)
        )
    return {
        "comparison": comparison,
        "targets": targets_report(shapes, cap, off, on, args, off2),
    }


def targets_report(
    shapes: list[Shape],
    cap: dict[str, dict[str, Any]],
    off: dict[str, dict[str, Any]],
    on: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    off2: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    keys = {s.key for s in shapes}
    lines: list[dict[str, Any]] = []

    def add(issue: str, what: str, value: str, met: bool | None) -> None:
        lines.append({"issue": issue, "target": what, "measured": value, "met": met})

    c16 = f"at {args.connections} connections"
    for key in ISSUE2_SHAPES:
        if key not in keys:
            continue
        ratio = _ratio(off.get(key), cap.get(key))
        add(
            "2",
            f"({key}) no cache >= {ISSUE2_RATIO:g}x CAP",
            _x(ratio),
            None if ratio is None else ratio >= ISSUE2_RATIO,
        )
        p99 = (_ok(off.get(key)) or {}).get("p99_ms")
        add(
            "2",
            f"({key}) no cache p99 < {ISSUE2_P99_MS:g} ms {c16}",
            "-" if p99 is None else f"{p99:.2f} ms",
            None if p99 is None else p99 < ISSUE2_P99_MS,
        )
    if "a" in keys:
        ratio = _ratio(on.get("a"), cap.get("a"))
        cap_a = cap.get("a") or {}
        note = ""
        if ratio is None and _ok(on.get("a")) and cap_a.get("seconds") and cap_a.get("non_2xx"):
            # CAP answered (a) partly with 500s (its pool's acquire timeout on a busy machine):
            # compare with the 2xx answers it did deliver, and say so.
            good = (cap_a["requests"] - cap_a["non_2xx"]) / cap_a["seconds"]
            if good > 0:
                ratio = on["a"]["rps"] / good
                note = f" (vs CAP's 2xx-only {good:.1f} req/s; CAP had {cap_a['non_2xx']} non-2xx)"
        add(
            "4",
            f"(a) cached >= {ISSUE4_A_RATIO:g}x CAP",
            _x(ratio) + note,
            None if ratio is None else ratio >= ISSUE4_A_RATIO,
        )
    for shape in shapes:
        if shape.vary:
            continue
        r = _ok(on.get(shape.key))
        if r is None:
            add(
                "4",
                f"({shape.key}) cache hit >= {ISSUE4_HIT_RPS:,.0f} req/s, p99 < {ISSUE4_HIT_P99_MS:g} ms",
                "-",
                None,
            )
            continue
        ratio_hit = (r.get("cache") or {}).get("hit_ratio")
        hit_text = "-" if ratio_hit is None else f"{ratio_hit:.2%} hits"
        met = r["rps"] >= ISSUE4_HIT_RPS and r["p99_ms"] < ISSUE4_HIT_P99_MS
        add(
            "4",
            f"({shape.key}) cache hit >= {ISSUE4_HIT_RPS:,.0f} req/s, p99 < {ISSUE4_HIT_P99_MS:g} ms {c16}",
            f"{r['rps']:,.0f} req/s, p99 {r['p99_ms']:.2f} ms, {hit_text}",
            met,
        )
    for shape in shapes:
        if not shape.vary:
            continue
        ratio = _ratio(on.get(shape.key), off.get(shape.key))
        c = (on.get(shape.key) or {}).get("cache") or {}
        ratio_hit = c.get("hit_ratio")
        hit_text = "" if ratio_hit is None else f" ({ratio_hit:.2%} hits)"
        if off2:
            floor = _ratio(off2.get(shape.key), off.get(shape.key))
            hit_text += f"; two equal no-cache servers: {_x(floor)}"
        add(
            "4",
            f"({shape.key}) cache miss: on/off >= {ISSUE4_MISS_RATIO:g}",
            _x(ratio) + hit_text,
            None if ratio is None else ratio >= ISSUE4_MISS_RATIO,
        )
    print("\ntargets:")
    for line in lines:
        print(
            f"  issue {line['issue']}: {line['target']}: {line['measured']}  {_verdict(line['met'])}"
        )
    return lines


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
    p.add_argument("--db", default="r2sf_bench", help="database for r2sf (both modes)")
    p.add_argument(
        "--cap-db",
        default="peer_cap",
        help="database for CAP (same generated data; CAP adds its views there)",
    )
    p.add_argument("--cap-dir", type=Path, default=OUT / "cap", help="CAP project directory")
    p.add_argument("--workers", type=int, default=2, help="r2sf workers (each mode)")
    p.add_argument("--cache-mb", type=int, default=None, help="r2sf --cache-mb (default: r2sf's)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured wrk first")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure each request this many times per server, interleaved; report the median",
    )
    p.add_argument(
        "--wrk-timeout",
        type=float,
        default=10.0,
        help="wrk --timeout in seconds: a slower answer counts as a socket error (default 10)",
    )
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--shapes",
        default=",".join(SHAPE_KEYS),
        help=f"requests to measure, comma-separated (default all: {','.join(SHAPE_KEYS)})",
    )
    p.add_argument(
        "--miss-bump",
        type=float,
        default=1.0,
        help="during b*/c* runs, bump the sales data version every S seconds (0: never)",
    )
    p.add_argument("--no-cap", action="store_true", help="skip CAP")
    p.add_argument("--no-r2sf", action="store_true", help="skip both r2sf modes")
    p.add_argument("--no-cache-mode", action="store_true", help="skip r2sf with the cache off")
    p.add_argument("--no-cached-mode", action="store_true", help="skip r2sf with the cache on")
    p.add_argument(
        "--noise-floor",
        action="store_true",
        help="also run a second, identical --no-cache server and print its req/s over the"
        " first's (how far two equal servers differ in this run)",
    )
    p.add_argument(
        "--workers-compare",
        action="store_true",
        help="also run (a), cache on, under --workers 1 and 2 (unchanged data, then a version"
        " bump every second)",
    )
    p.add_argument(
        "--workers-compare-only",
        action="store_true",
        help="only the --workers-compare runs (no CAP, no side-by-side table)",
    )
    p.add_argument("--check-only", action="store_true", help="pre-checks only, no wrk runs")
    args = p.parse_args(argv)
    wanted = [k.strip() for k in args.shapes.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in SHAPE_KEYS]
    if unknown:
        p.error(f"unknown --shapes {unknown}; choose from {','.join(SHAPE_KEYS)}")
    args.shape_list = [s for s in SHAPES if s.key in wanted]
    if args.workers_compare_only:
        args.workers_compare = True
    return args


def vary_ranges_of(db_url: str, shapes: list[Shape]) -> dict[str, tuple[int, int]]:
    ranges = {}
    for shape in shapes:
        if shape.vary:
            column = shape.vary  # a fixed name from SHAPES, never user input
            lo, hi = psql(db_url, f"select min({column}), max({column}) from public.sales").split(
                "|"
            )
            ranges[shape.key] = (int(lo), int(hi))
    return ranges


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shapes: list[Shape] = args.shape_list
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if not args.check_only:
        ensure_wrk()
    record = _record_header(args, shapes, stamp)
    with contextlib.ExitStack() as stack:
        server_url = _database_server(stack, args)
        record["server"] = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", server_url)
        vary_ranges = _load_data(args, server_url, shapes, record)
        samples = {k: (lo + hi) // 2 for k, (lo, hi) in vary_ranges.items()}
        targets = _start_targets(stack, args, server_url, stamp, record)
        mismatches = _check_answers(targets, shapes, samples)
        record["mismatches"] = mismatches
        if not args.check_only:
            _warn_if_busy()
            measure(targets, shapes, args, vary_ranges)
            record["loadavg_after"] = os.getloadavg()
        report_checks(targets, shapes)
        for warning in mismatches:
            print(warning)
        if not args.check_only and targets:
            record.update(report(targets, shapes, args))
        if args.workers_compare and not args.check_only:
            record["workers_compare"] = workers_compare(args.db_url, args, stamp)
        record["servers"] = {t.name: _server_record(t) for t in targets}
    _save(record, stamp)
    return 0


def _record_header(args: argparse.Namespace, shapes: list[Shape], stamp: str) -> dict[str, Any]:
    return {
        "started": stamp,
        "command": " ".join([sys.executable, *sys.argv]),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
            "python": platform.python_version(),
        },
        "git": _git_head(),
        "rows": args.rows,
        "shapes": [s.key for s in shapes],
        "wrk": f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency",
        "failures": [],
    }


def _database_server(stack: contextlib.ExitStack, args: argparse.Namespace) -> str:
    """--server, or with --embedded a private pgserver stopped when the stack closes."""
    if not args.embedded:
        return str(args.server)
    import pgserver.postgres_server as pgserver

    datadir = OUT / "pgdata"
    datadir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    stack.callback(server.cleanup)
    server_url = str(server.get_uri())
    log(f"embedded PostgreSQL at {server_url}")
    return server_url


def _uses(args: argparse.Namespace) -> tuple[bool, bool]:
    """(r2sf, CAP): which servers this run measures."""
    use_r2sf = not args.no_r2sf or args.workers_compare
    use_cap = not args.no_cap and not args.workers_compare_only
    return use_r2sf, use_cap


def _load_data(
    args: argparse.Namespace, server_url: str, shapes: list[Shape], record: dict[str, Any]
) -> dict[str, tuple[int, int]]:
    """Load TICKIT into each server's database; the ranges of the columns miss shapes vary."""
    use_r2sf, use_cap = _uses(args)
    if use_r2sf:
        record["r2sf_data_md5"] = ensure_tickit(server_url, args.db, args.rows)
    if use_cap:
        record["cap_data_md5"] = ensure_tickit(server_url, args.cap_db, args.rows)
    if use_r2sf and use_cap and record["r2sf_data_md5"] != record["cap_data_md5"]:
        log("WARNING: the two databases hold different data (checksums differ)")
        record["failures"].append("data checksums differ between r2sf and CAP databases")
    args.db_url = with_database(server_url, args.db)
    vary_ranges: dict[str, tuple[int, int]] = (
        vary_ranges_of(args.db_url, shapes) if use_r2sf else {}
    )
    record["vary_ranges"] = vary_ranges
    return vary_ranges


def _start_targets(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    server_url: str,
    stamp: str,
    record: dict[str, Any],
) -> list[Target]:
    """CAP and the r2sf modes asked for, each stopped when the stack closes."""
    targets: list[Target] = []
    if _uses(args)[1]:
        try:
            targets.append(
                stack.enter_context(cap_server(server_url, args.cap_db, args.rows, args.cap_dir))
            )
        except (subprocess.CalledProcessError, OSError) as exc:
            log(f"CAP failed: {exc}")
            record["failures"].append(f"cap: {exc}")
    modes = []
    if not args.no_r2sf and not args.workers_compare_only:
        if not args.no_cache_mode:
            modes.append((OFF, False))
        if not args.no_cached_mode:
            modes.append((ON, True))
        if args.noise_floor:
            modes.append((OFF2, False))
    for name, cache in modes:
        try:
            targets.append(
                stack.enter_context(
                    r2sf_target(name, args.db_url, args, stamp, cache=cache, workers=args.workers)
                )
            )
        except (RuntimeError, OSError) as exc:
            log(str(exc))
            record["failures"].append(f"{name}: {str(exc).splitlines()[0]}")
    return targets


def _check_answers(
    targets: list[Target], shapes: list[Shape], samples: dict[str, int]
) -> list[str]:
    """Ask every shape of every server once; the differences between their answers."""
    auth = httpx.BasicAuth(*CREDENTIALS)
    with httpx.Client(auth=auth, timeout=60.0, headers={"Accept": "application/json"}) as client:
        for t in targets:
            map_names(t, client)
            check(t, client, shapes, samples)
    mismatches = compare(targets, shapes)
    for warning in mismatches:
        log(f"WARNING {warning}")
    return mismatches


def _warn_if_busy() -> None:
    busy = os.getloadavg()[0]
    if busy > (os.cpu_count() or 1) / 2:
        log(
            f"WARNING: load average {busy:.1f} on {os.cpu_count()} cores before measuring:"
            " other work competes for the CPU, and it takes more from single-process CAP"
            " than from r2sf's several workers"
        )


def _server_record(t: Target) -> dict[str, Any]:
    return {
        "root": t.root,
        "space_encoding": t.space,
        "cache": t.cache,
        "renamed": t.rename,
        "idle_rss": t.baseline_rss,
        "urls": t.urls,
        "checks": {k: {f: v for f, v in e.items() if f != "body"} for k, e in t.checks.items()},
        "results": {k: {f: v for f, v in r.items() if f != "raw"} for k, r in t.results.items()},
    }


def _save(record: dict[str, Any], stamp: str) -> None:
    for r in record.get("workers_compare", {}).values():
        r.pop("raw", None)
    path = OUT / f"odata-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(
        f"\nresults: {path}  (load average before {record['host']['loadavg_before'][0]:.2f},"
        f" after {os.getloadavg()[0]:.2f})"
    )
    for failure in record["failures"]:
        print(f"FAILED: {failure}")


def _git_head() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return str(done.stdout).strip()


if __name__ == "__main__":
    sys.exit(main())
