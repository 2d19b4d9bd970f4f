"""Cache soak: 100 Salesforce-shaped queries under load while the data changes every few seconds.

Starts `r2sf serve` (cache on, or `--no-cache` for the comparison) on its own 1M-row TICKIT
database, drives 100 distinct queries from concurrent async clients in a child process, and
commits a change every `--write-every` seconds (an UPDATE, inserts/deletes, a Category edit, and
every `--sync-every`-th step a real `sync.engine.run_job` run). After each commit it measures how
long until `Sales(id)` reflects the change, then, once the bound has passed, asks a sample of the
queries over HTTP and of PostgreSQL directly and counts every difference as a stale answer. It
samples the server's RSS every 10 s and reads cache hits from /metrics. It reports, never asserts.

    .venv/bin/python bench/cache_soak.py [--minutes 10] [--rows N] [--clients 16] [--no-cache]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import salesforce  # bench/salesforce.py: the request shapes and their encoding
from common import (  # bench/ is a directory of scripts, not a package
    CREDENTIALS,
    OUT,
    REPO,
    cache_delta,
    ensure_tickit,
    free_port,
    log,
    mib,
    r2sf_server,
    scrape_workers,
    tree_rss,
    with_database,
)

sys.path.insert(0, str(REPO))

ISSUE4_BOUND_S = 1.0  # "the first response reflecting it arrives within 1 s"
FLAT_GROWTH = 1.10  # memory "flat": second-half peak within 10% of the first half's
SAMPLE_EVERY_S = 10.0
SRC_SCHEMA = "soak_src"  # the sync's source table lives outside public, so it is not exposed
SALES_COLUMNS = (
    "salesid, listid, sellerid, buyerid, eventid, dateid, qtysold, pricepaid, commission, saletime"
)

# ---------------------------------------------------------------- the 100 queries


@dataclass(frozen=True)
class Query:
    """One OData request and the same question in SQL.

    kind: "list" (compare @odata.count and the (key, value) rows), "count" (/$count text),
    "entity" (one row, or 404 when SQL finds none).
    """

    name: str
    path: str  # relative to the service root, encoded as Salesforce sends it
    kind: str
    table: str  # "sales" or "category"
    where: str = "true"
    params: tuple[Any, ...] = ()
    order: str = ""
    skip: int = 0
    top: int = 26
    with_count: bool = True


_odata = salesforce.url  # Salesforce Connect's encoding (bench/salesforce.py)


def build_queries(rows: int, seed: int = 4) -> tuple[list[Query], list[int], list[int]]:
    """100 distinct queries over Sales and Category; also the event ids and entity keys used."""
    rng = random.Random(seed)
    events = rng.sample(range(1, 8799), 30)
    keys = rng.sample(range(1, rows + 1), 20)
    sel = "salesid,pricepaid,eventid,qtysold"
    qs: list[Query] = []

    def sales_list(
        name: str,
        filt: str | None,
        where: str,
        params: tuple[Any, ...],
        orderby: str | None = None,
        order_sql: str = "salesid",
        select: str = sel,
    ) -> None:
        options = [("$select", select)]
        if filt:
            options.append(("$filter", filt))
        if orderby:
            options.append(("$orderby", orderby))
        options += [("$count", "true"), ("$top", "26")]
        qs.append(Query(name, _odata("Sales", options), "list", "sales", where, params, order_sql))

    # List views over all rows (one exact count per version, shared through the count cache).
    for orderby, order_sql in (
        (None, "salesid"),
        ("pricepaid desc", "pricepaid desc, salesid"),
        ("saletime desc", "saletime desc, salesid"),
        ("salesid desc", "salesid desc"),
    ):
        sales_list(f"list {orderby or 'default'}", None, "true", (), orderby, order_sql)
    sales_list("list narrow select", None, "true", (), select="salesid,pricepaid")
    sales_list("list wide select", None, "true", (), select="salesid,pricepaid,sellerid,buyerid")
    # Filters on the indexed eventid, as a related list or a lookup would send them.
    for i, e in enumerate(events[:20]):
        orderby, order_sql = (
            ("pricepaid desc", "pricepaid desc, salesid") if i % 4 == 0 else (None, "salesid")
        )
        sales_list(f"eventid eq {e}", f"eventid eq {e}", "eventid = $1", (e,), orderby, order_sql)
    for i, e in enumerate(events[20:28]):
        q = 2 + i % 6
        sales_list(
            f"eventid {e} qty>={q}",
            f"eventid eq {e} and qtysold ge {q}",
            "eventid = $1 and qtysold >= $2",
            (e, q),
        )
    for a, b in zip(events[:8:2], events[1:8:2], strict=True):
        sales_list(
            f"eventid {a} or {b}",
            f"(eventid eq {a} or eventid eq {b})",
            "eventid = any($1::int[])",
            ([a, b],),
        )
    for start in rng.sample(range(1, rows - 1000), 6):
        sales_list(
            f"salesid range {start}",
            f"salesid ge {start} and salesid lt {start + 500}",
            "salesid >= $1 and salesid < $2",
            (start, start + 500),
        )
    # Full scans: filters on unindexed columns.
    for s in rng.sample(range(1, 49991), 4):
        sales_list(f"sellerid eq {s}", f"sellerid eq {s}", "sellerid = $1", (s,))
    for q in (1, 3, 5, 8):
        sales_list(f"qtysold eq {q}", f"qtysold eq {q}", "qtysold = $1", (q,))
    for lo in (100, 5000, 9000, 19000):
        hi = lo + 50
        sales_list(
            f"pricepaid {lo}-{hi}",
            f"pricepaid gt {lo} and pricepaid lt {hi}",
            "pricepaid > $1 and pricepaid < $2",
            (Decimal(lo), Decimal(hi)),
        )
    # Salesforce searches and lists over Category.
    for term in ("Jazz", "League", "Sports", "opera", "Concerts"):
        filt = salesforce.search(term, ("catname", "catgroup", "catdesc"))
        where = "catname ilike $1 or catgroup ilike $1 or catdesc ilike $1"
        options = [
            ("$select", "catid,catname,catdesc"),
            ("$count", "true"),
            ("$filter", filt),
            ("$top", "25"),
        ]
        qs.append(
            Query(
                f"search {term}",
                _odata("Category", options),
                "list",
                "category",
                where,
                (f"%{term}%",),
                "catid",
                top=25,
            )
        )
    for orderby, order_sql in (
        (None, "catid"),
        ("catname", "catname, catid"),
        ("catgroup desc", "catgroup desc, catid"),
    ):
        options = [("$select", "catid,catname,catdesc"), ("$count", "true"), ("$top", "26")]
        if orderby:
            options.insert(1, ("$orderby", orderby))
        qs.append(
            Query(
                f"category {orderby or 'default'}",
                _odata("Category", options),
                "list",
                "category",
                order=order_sql,
            )
        )
    # Record pages.
    for k in keys:
        qs.append(Query(f"Sales({k})", f"Sales({k})", "entity", "sales", "salesid = $1", (k,)))
    for c in (3, 7, 10):
        qs.append(
            Query(f"Category({c})", f"Category({c})", "entity", "category", "catid = $1", (c,))
        )
    # Deep pages (no count, as Salesforce's paging requests).
    for skip in (100, 1000, 5000, 20000, 50000):
        options = [("$select", "salesid,pricepaid"), ("$skip", str(skip)), ("$top", "26")]
        qs.append(
            Query(
                f"skip {skip}",
                _odata("Sales", options),
                "list",
                "sales",
                skip=skip,
                with_count=False,
                order="salesid",
            )
        )
    # /$count, as a related-list badge asks it.
    for e in events[8:14]:
        qs.append(
            Query(
                f"$count eventid {e}",
                _odata("Sales/$count", [("$filter", f"eventid eq {e}")]),
                "count",
                "sales",
                "eventid = $1",
                (e,),
            )
        )
    qs.append(Query("$count all", "Sales/$count", "count", "sales"))
    qs.append(Query("$count category", "Category/$count", "count", "category"))
    assert len(qs) == 100 and len({q.path for q in qs}) == 100, len(qs)
    return qs, events, keys


# ---------------------------------------------------------------- comparing HTTP with SQL

_KEY = {"sales": "salesid", "category": "catid"}
_VALUE = {"sales": "pricepaid", "category": "catdesc"}


async def sql_answer(conn: asyncpg.Connection, q: Query) -> Any:
    """What PostgreSQL says now: the answer the HTTP response must equal."""
    key, value = _KEY[q.table], _VALUE[q.table]
    table = f"public.{q.table}"  # fixed names from build_queries, never user input
    if q.kind == "count":
        return await conn.fetchval(f"select count(*) from {table} where {q.where}", *q.params)
    if q.kind == "entity":
        row = await conn.fetchrow(f"select {key}, {value} from {table} where {q.where}", *q.params)
        return None if row is None else [row[0], row[1]]
    rows = await conn.fetch(
        f"select {key}, {value} from {table} where {q.where} order by {q.order}"
        f" limit {q.top} offset {q.skip}",
        *q.params,
    )
    count = None
    if q.with_count:
        count = await conn.fetchval(f"select count(*) from {table} where {q.where}", *q.params)
    return {"count": count, "rows": [[r[0], r[1]] for r in rows]}


def http_answer(q: Query, response: httpx.Response) -> Any:
    """The same shape as sql_answer, read from the OData response."""
    key, value = _KEY[q.table], _VALUE[q.table]
    if q.kind == "count":
        return int(response.text)
    if q.kind == "entity":
        if response.status_code == 404:
            return None
        body = json.loads(response.content, parse_float=Decimal)
        return [body[key], body[value]]
    body = json.loads(response.content, parse_float=Decimal)
    return {
        "count": body.get("@odata.count"),
        "rows": [[r[key], r[value]] for r in body["value"]],
    }


# ---------------------------------------------------------------- the load (child process)


def load_main(spec_file: str) -> None:
    """Child process: `clients` async clients loop over the queries until the deadline and print
    a JSON summary. A separate process so the driver's CPU does not delay the probes."""
    spec = json.loads(Path(spec_file).read_text())
    result = asyncio.run(_drive(spec["root"], spec["paths"], spec["clients"], spec["seconds"]))
    print(json.dumps(result))


async def _drive(root: str, paths: list[str], clients: int, seconds: float) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    bad: list[str] = []
    latencies: list[float] = []
    per_path: dict[str, list[float]] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=root, auth=CREDENTIALS, limits=limits, timeout=30.0
    ) as client:

        async def one(seed: int) -> None:
            rng = random.Random(seed)
            order = list(paths)
            while time.monotonic() < deadline:
                rng.shuffle(order)
                for path in order:
                    if time.monotonic() >= deadline:
                        return
                    started = time.perf_counter()
                    try:
                        response = await client.get(path, headers={"Accept": "application/json"})
                    except httpx.HTTPError as exc:
                        errors[type(exc).__name__] += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    per_path.setdefault(path, []).append(latencies[-1])
                    statuses[response.status_code] += 1
                    if response.status_code >= 300 and len(bad) < 10:
                        bad.append(f"{response.status_code} {path}: {response.text[:200]}")

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(clients)))
        elapsed = time.monotonic() - started
    latencies.sort()
    n = len(latencies)
    return {
        "seconds": elapsed,
        "requests": n,
        "rps": n / elapsed if elapsed else None,
        "p50_ms": latencies[n // 2] * 1000 if n else None,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "bad_examples": bad,
        # Where the time goes: the ten queries with the highest mean latency under load.
        "slowest": [
            {"path": path, "requests": len(t), "mean_ms": round(sum(t) / len(t) * 1000, 1)}
            for path, t in sorted(per_path.items(), key=lambda kv: -sum(kv[1]) / len(kv[1]))[:10]
        ],
    }


# ---------------------------------------------------------------- the writer, probe and checker


@dataclass
class Soak:
    args: argparse.Namespace
    root: str
    db_url: str
    queries: list[Query]
    events: list[int]
    keys: list[int]
    trusted: list[Query] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    checked: int = 0
    check_errors: list[str] = field(default_factory=list)
    probe_timeouts: int = 0
    inserted: list[int] = field(default_factory=list)
    next_insert: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)
    _cursor: int = 0

    def fresh_client(self) -> httpx.AsyncClient:
        # No keep-alive: each request opens a new connection, so the kernel spreads them over
        # the workers and a worker that missed a notification cannot hide behind another.
        return httpx.AsyncClient(
            base_url=self.root,
            auth=CREDENTIALS,
            timeout=30.0,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"Accept": "application/json"},
        )

    async def compare(
        self, conn: asyncpg.Connection, client: httpx.AsyncClient, q: Query
    ) -> str | None:
        """None when HTTP and SQL agree, else a description of the difference."""
        response = await client.get(q.path)
        if response.status_code not in (200, 404) or (
            response.status_code == 404 and q.kind != "entity"
        ):
            return f"HTTP {response.status_code}: {response.text[:200]}"
        want = await sql_answer(conn, q)
        got = http_answer(q, response)
        if got != want:
            return f"HTTP {str(got)[:300]} != SQL {str(want)[:300]}"
        return None

    async def baseline(self, conn: asyncpg.Connection) -> list[dict[str, str]]:
        """Before any load or write: queries whose HTTP and SQL answers differ here differ for a
        reason other than staleness (a translation gap); they are reported and left out."""
        differing = []
        async with self.fresh_client() as client:
            for q in self.queries:
                problem = await self.compare(conn, client, q)
                if problem is None:
                    self.trusted.append(q)
                else:
                    differing.append({"query": q.name, "path": q.path, "difference": problem})
        return differing

    async def write(self, conn: asyncpg.Connection, step: int) -> dict[str, Any]:
        """One committed change; returns what to poll for (`probe`, `expect`) and what it did."""
        rng = random.Random(1000 + step)
        probe = self.keys[step % len(self.keys)]
        info: dict[str, Any] = {"step": step, "probe": probe}
        if self.args.sync_every and step % self.args.sync_every == self.args.sync_every - 1:
            return await self.sync_step(conn, info, rng)
        rows = self.args.rows
        async with conn.transaction():
            # The probe row, random rows anywhere, and rows in the filtered events.
            ids = [probe, *rng.sample(range(1, rows + 1), 20)]
            ids += await conn.fetchval(
                "select array(select salesid from public.sales where eventid = any($1::int[])"
                " order by random() limit 10)",
                rng.sample(self.events, 5),
            )
            await conn.execute(
                "update public.sales set pricepaid = pricepaid + 1 where salesid = any($1::int[])",
                ids,
            )
            info["updated"] = len(ids)
            if step % 3 == 1:
                new = [rows + 1 + self.next_insert + i for i in range(3)]
                self.next_insert += 3
                await conn.execute(
                    f"insert into public.sales ({SALES_COLUMNS})"
                    " select n, 1, 1, 1, $2::int, 1827, 2, 100.00, 15.00, '2008-06-01'"
                    " from unnest($1::int[]) n",
                    new,
                    rng.choice(self.events),
                )
                self.inserted += new
                info["inserted"] = len(new)
            elif step % 3 == 2 and self.inserted:
                await conn.execute(
                    "delete from public.sales where salesid = any($1::int[])", self.inserted
                )
                info["deleted"] = len(self.inserted)
                self.inserted = []
            if step % 4 == 3:
                await conn.execute(
                    "update public.category set catdesc = case when catdesc like '%*'"
                    " then rtrim(catdesc, '*') else catdesc || '*' end where catid = $1",
                    rng.randint(1, 11),
                )
                info["category"] = 1
            info["expect"] = await conn.fetchval(
                "select pricepaid from public.sales where salesid = $1", probe
            )
        info["kind"] = "sql"
        return info

    async def sync_step(
        self, conn: asyncpg.Connection, info: dict[str, Any], rng: random.Random
    ) -> dict[str, Any]:
        """A real sync run: change the source, then `run_job` merges it into public.sales."""
        from sync.config import Job
        from sync.engine import run_job

        probe = info["probe"]
        ids = [probe, *rng.sample(range(200, self.args.rows + 1, 200), 50)]
        await conn.execute(
            f"update {SRC_SCHEMA}.sales s set pricepaid = t.pricepaid + 2 from public.sales t"
            " where s.salesid = t.salesid and s.salesid = any($1::int[])",
            ids,
        )
        info["expect"] = await conn.fetchval(
            f"select pricepaid from {SRC_SCHEMA}.sales where salesid = $1", probe
        )
        # As the job would read from r2sf.toml: deletes "ignore" (the source is a subset).
        job = Job.model_validate(
            {
                "name": "soak_sales",
                "query": f"select {SALES_COLUMNS} from {SRC_SCHEMA}.sales",
                "target": "public.sales",
                "key": ["salesid"],
                "create": False,
            }
        )
        started = time.monotonic()
        result = await run_job(job, target_url=self.db_url, source_url=self.db_url)
        info["kind"] = "sync"
        info["sync_seconds"] = round(time.monotonic() - started, 3)
        info["updated"] = result.updated
        info["inserted"] = result.inserted
        return info

    async def probe(
        self, client: httpx.AsyncClient, info: dict[str, Any], committed: float
    ) -> float | None:
        """Seconds from the commit until Sales(probe) answers the new pricepaid."""
        expect = info["expect"]
        deadline = committed + 10.0
        while time.monotonic() < deadline:
            response = await client.get(f"Sales({info['probe']})")
            if response.status_code == 200:
                got = json.loads(response.content, parse_float=Decimal)["pricepaid"]
                if got == expect:
                    return time.monotonic() - committed
            await asyncio.sleep(0.002)
        return None

    async def check_sample(
        self, conn: asyncpg.Connection, client: httpx.AsyncClient, step: int
    ) -> None:
        """The next few trusted queries in turn, so every query is checked over the run."""
        for _ in range(min(self.args.check_sample, len(self.trusted))):
            q = self.trusted[self._cursor % len(self.trusted)]
            self._cursor += 1
            try:
                problem = await self.compare(conn, client, q)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                self.check_errors.append(f"{q.name}: {type(exc).__name__}: {exc}")
                continue
            self.checked += 1
            if problem is not None:
                self.stale.append(
                    {"step": step, "query": q.name, "path": q.path, "difference": problem}
                )
                log(f"STALE after step {step}: {q.name}: {problem}")

    async def writer(self, seconds: float) -> None:
        conn = await asyncpg.connect(self.db_url)
        deadline = time.monotonic() + seconds
        step = 0
        try:
            async with self.fresh_client() as client:
                next_at = time.monotonic() + self.args.write_every
                while next_at < deadline:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    info = await self.write(conn, step)
                    committed = time.monotonic()
                    delay = await self.probe(client, info, committed)
                    if delay is None:
                        self.probe_timeouts += 1
                        log(f"step {step}: Sales({info['probe']}) did not change within 10 s")
                    else:
                        self.delays.append(delay)
                    info["delay_ms"] = None if delay is None else round(delay * 1000, 1)
                    # Staleness is judged once the bound has passed since the commit.
                    await asyncio.sleep(max(0.0, committed + self.args.bound - time.monotonic()))
                    await self.check_sample(conn, client, step)
                    self.steps.append(info)
                    step += 1
                    next_at += self.args.write_every
        finally:
            await conn.close()

    async def sample_rss(self, pid: int, seconds: float) -> None:
        started = time.monotonic()
        while True:
            self.rss.append((round(time.monotonic() - started, 1), tree_rss(pid)))
            if time.monotonic() - started + SAMPLE_EVERY_S > seconds:
                return
            await asyncio.sleep(SAMPLE_EVERY_S)


# ---------------------------------------------------------------- set-up and report


async def prepare_source(db_url: str, keys: list[int]) -> None:
    """The sync's source: a copy of some sales rows (every 200th and the probed keys) in a
    schema r2sf does not expose."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(f"create schema if not exists {SRC_SCHEMA}")
        await conn.execute(f"drop table if exists {SRC_SCHEMA}.sales")
        # CREATE TABLE AS takes no bound parameters: create, then fill.
        await conn.execute(f"create table {SRC_SCHEMA}.sales (like public.sales)")
        await conn.execute(
            f"insert into {SRC_SCHEMA}.sales select {SALES_COLUMNS} from public.sales"
            " where salesid % 200 = 0 or salesid = any($1::int[])",
            keys,
        )
        await conn.execute(f"alter table {SRC_SCHEMA}.sales add primary key (salesid)")
    finally:
        await conn.close()


async def cleanup(db_url: str, rows: int) -> None:
    """Leave `rows` rows so the next run does not reload (pricepaid drift is harmless here)."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("delete from public.sales where salesid > $1", rows)
        await conn.execute(
            "update public.category set catdesc = rtrim(catdesc, '*') where catdesc like '%*'"
        )
    finally:
        await conn.close()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def run(
    args: argparse.Namespace, served_root: str, base: str, pid: int, workers: int, db_url: str
) -> dict[str, Any]:
    queries, events, keys = build_queries(args.rows)
    soak = Soak(args, served_root, db_url, queries, events, keys)
    conn = await asyncpg.connect(db_url)
    try:
        differing = await soak.baseline(conn)
    finally:
        await conn.close()
    for d in differing:
        log(
            f"baseline: HTTP and SQL differ before any change, left out: {d['query']}: {d['difference']}"
        )
    log(f"baseline: {len(soak.trusted)}/{len(queries)} queries agree with PostgreSQL")
    seconds = args.minutes * 60
    spec = OUT / f"soak-load-{os.getpid()}.json"
    spec.write_text(
        json.dumps(
            {
                "root": served_root,
                "paths": [q.path for q in queries],
                "clients": args.clients,
                "seconds": seconds,
            }
        )
    )
    scrape_before = scrape_workers(base, workers) if not args.no_cache else {}
    log(f"load: {args.clients} clients for {seconds:.0f} s; a change every {args.write_every:g} s")
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--load-worker", str(spec), stdout=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.gather(soak.writer(seconds), soak.sample_rss(pid, seconds))
        out, _ = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        spec.unlink(missing_ok=True)
    load = json.loads(out.decode() or "{}")
    scrape_after = scrape_workers(base, workers) if not args.no_cache else {}
    return {
        "queries": len(queries),
        "baseline_differences": differing,
        "trusted": len(soak.trusted),
        "load": load,
        "cache": cache_delta(scrape_before, scrape_after, workers) if scrape_after else None,
        "steps": soak.steps,
        "delays_ms": [round(d * 1000, 1) for d in soak.delays],
        "probe_timeouts": soak.probe_timeouts,
        "checked": soak.checked,
        "stale": soak.stale,
        "check_errors": soak.check_errors,
        "rss": soak.rss,
    }


def summarise(result: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    load = result["load"]
    delays = result["delays_ms"]
    syncs = [s for s in result["steps"] if s.get("kind") == "sync"]
    sync_delays = [s["delay_ms"] for s in syncs if s.get("delay_ms") is not None]
    non_2xx = sum(v for k, v in load.get("statuses", {}).items() if not k.startswith("2"))
    transport = sum(load.get("errors", {}).values())
    rss = [r for _, r in result["rss"]]
    half = max(1, len(rss) // 2)
    growth = max(rss[half:] or rss) / max(rss[:half]) if rss else None
    cache = result["cache"] or {}
    print(
        f"\ncache soak ({'cache off' if args.no_cache else 'cache on'}, {args.minutes:g} min,"
        f" {args.clients} clients, {result['queries']} queries, a change every"
        f" {args.write_every:g} s, sync every {args.sync_every or '-'} steps)"
    )
    print(
        f"  load: {load.get('requests', 0):,} requests, {load.get('rps') or 0:,.0f} req/s,"
        f" p50 {load.get('p50_ms') or 0:.1f} ms, p99 {load.get('p99_ms') or 0:.1f} ms,"
        f" statuses {load.get('statuses')}, transport errors {load.get('errors')}"
    )
    for slow in load.get("slowest", [])[:5]:
        print(f"    slow: {slow['mean_ms']:.1f} ms mean over {slow['requests']} {slow['path']}")
    if cache:
        ratio = cache.get("hit_ratio")
        print(
            f"  cache: {cache['cache_hits']:,} hits / {cache['cache_misses']:,} misses"
            f" ({'-' if ratio is None else f'{ratio:.1%}'} hits), {cache['cache_evictions']} evictions,"
            f" counts {cache['count_cache_hits']:,} hits / {cache['count_cache_misses']:,} misses,"
            f" {cache['cache_entries']} entries, {mib(cache['cache_bytes'])}, workers {cache['workers_seen']}"
        )
    print(
        f"  commits: {len(result['steps'])} ({len(syncs)} through run_job); notification delay"
        f" p50 {_ms(percentile(delays, 0.5))}, p99 {_ms(percentile(delays, 0.99))},"
        f" max {_ms(max(delays) if delays else None)}; after a sync: max {_ms(max(sync_delays) if sync_delays else None)};"
        f" no change seen within 10 s: {result['probe_timeouts']}"
    )
    print(
        f"  staleness: {result['checked']} answers compared with PostgreSQL at >= {args.bound:g} s after"
        f" a commit, {len(result['stale'])} differ; {len(result['check_errors'])} check errors;"
        f" {len(result['baseline_differences'])} queries left out (differ before any change)"
    )
    print(
        f"  RSS (server tree, every {SAMPLE_EVERY_S:g} s): first {mib(rss[0] if rss else None)},"
        f" max {mib(max(rss) if rss else None)}, last {mib(rss[-1] if rss else None)};"
        f" second-half peak / first-half peak {'-' if growth is None else f'{growth:.3f}'}"
    )
    bound_max = max(delays) / 1000 if delays else None
    targets = [
        (
            "first response reflecting a commit within 1 s (max delay)",
            _ms(max(delays) if delays else None),
            None
            if bound_max is None
            else bound_max <= ISSUE4_BOUND_S and result["probe_timeouts"] == 0,
        ),
        (
            "... after a real sync run (max delay)",
            _ms(max(sync_delays) if sync_delays else None),
            None if not sync_delays else max(sync_delays) / 1000 <= ISSUE4_BOUND_S,
        ),
        (
            "no stale answer after the bound",
            f"{len(result['stale'])} of {result['checked']}",
            None if not result["checked"] else not result["stale"],
        ),
        (
            "no error",
            f"{non_2xx} non-2xx, {transport} transport, {len(result['check_errors'])} check",
            None if not load else non_2xx == 0 and transport == 0 and not result["check_errors"],
        ),
        (
            f"memory flat (second-half peak <= {FLAT_GROWTH:.2f} x first-half peak)",
            "-" if growth is None else f"{growth:.3f}",
            None if growth is None or len(rss) < 2 else growth <= FLAT_GROWTH,
        ),
    ]
    print("\ntargets (issue 4):")
    lines = []
    for what, measured, met in targets:
        verdict = "not measured" if met is None else ("MET" if met else "MISSED")
        print(f"  {what}: {measured}  {verdict}")
        lines.append({"target": what, "measured": measured, "met": met})
    for s in result["stale"][:10]:
        print(f"  STALE step {s['step']} {s['query']}: {s['difference']}")
    for d in result["baseline_differences"]:
        print(
            f"  left out (differs before any change): {d['query']} {d['path']}: {d['difference']}"
        )
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--server",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server URL (an admin database on it)",
    )
    p.add_argument(
        "--db", default="r2sf_soak", help="database (its own: the soak changes the data)"
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="sales rows (default 1,000,000)")
    p.add_argument("--minutes", type=float, default=10.0, help="duration of the load (default 10)")
    p.add_argument("--clients", type=int, default=16, help="concurrent async clients")
    p.add_argument("--workers", type=int, default=2, help="r2sf workers")
    p.add_argument("--cache-mb", type=int, default=None, help="r2sf --cache-mb (default: r2sf's)")
    p.add_argument("--no-cache", action="store_true", help="run r2sf with --no-cache (comparison)")
    p.add_argument("--write-every", type=float, default=3.0, help="seconds between commits")
    p.add_argument(
        "--sync-every", type=int, default=5, help="every Nth commit is a run_job sync (0: never)"
    )
    p.add_argument(
        "--bound",
        type=float,
        default=ISSUE4_BOUND_S,
        help="seconds after a commit before staleness is judged",
    )
    p.add_argument(
        "--check-sample", type=int, default=8, help="queries compared with SQL after each commit"
    )
    p.add_argument("--load-worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_worker:
        load_main(args.load_worker)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record: dict[str, Any] = {
        "started": stamp,
        "command": " ".join([sys.executable, *sys.argv]),
        "loadavg_before": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k != "load_worker"},
    }
    ensure_tickit(args.server, args.db, args.rows)
    db_url = with_database(args.server, args.db)
    asyncio.run(cleanup(db_url, args.rows))
    asyncio.run(prepare_source(db_url, build_queries(args.rows)[2]))
    logfile = OUT / f"soak-r2sf-{stamp}.log"
    cache_mb = 0 if args.no_cache else args.cache_mb
    with r2sf_server(
        db_url, workers=args.workers, port=free_port(), logfile=logfile, cache_mb=cache_mb
    ) as served:
        try:
            result = asyncio.run(
                run(args, served.root, served.base, served.pid, served.workers, db_url)
            )
        finally:
            asyncio.run(cleanup(db_url, args.rows))
    record["loadavg_after"] = os.getloadavg()
    record["result"] = result
    record["targets"] = summarise(result, args)
    path = OUT / f"soak-{stamp}.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(
        f"\nresults: {path}  (load average before {record['loadavg_before'][0]:.2f}, after {record['loadavg_after'][0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
