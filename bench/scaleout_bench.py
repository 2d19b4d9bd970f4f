"""Scale-out: one vs two `r2sf serve` processes, primary vs follower, pooler vs direct, cache on
and off, on Salesforce-shaped requests; then list-view p99 while a sync merges a 10% change
into the exposed table.

Everything runs on a throwaway primary with a streaming replica (tests/scaleout.py: initdb,
`pg_basebackup -R`) and Debian's PgBouncer in transaction mode in front of the primary, so the
shared test server is never touched. Reports, never asserts (bench/README.md).

    .venv/bin/python bench/scaleout_bench.py                  # 200k rows, 1M-row merge
    .venv/bin/python bench/scaleout_bench.py --rows 50000 --merge-rows 200000 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import salesforce  # the request shapes and their encoding
from bench.common import (
    AUTH_HEADER,
    OUT,
    REPO,
    Served,
    ensure_tickit,
    ensure_wrk,
    free_port,
    log,
    parse_wrk,
    r2sf_server,
)
from tests.scaleout import Replicated, pgbouncer, primary_with_replica

DB = "r2sf_scale"
SRC = "r2sf_scale_src"
HEADERS = {"Authorization": AUTH_HEADER, "Host": "bench.herokuapp.com"}
# Salesforce's requests (bench/salesforce.py), spaces as %20 for wrk's command line.
LIST_VIEW = "/odata/v4/" + salesforce.url(
    "Sales", salesforce.list_view("salesid,pricepaid", orderby="salesid"), space="%20"
)
ENTITY = "/odata/v4/Sales(123)"
MISS = "/odata/v4/" + salesforce.url(
    "Sales",
    (("$filter", "eventid eq __N__"), ("$select", "salesid,pricepaid,qtysold"),
     ("$count", "true"), ("$top", "26")),
    space="%20",
)  # fmt: skip
SHAPES = {"list view (a)": LIST_VIEW, "entity (c)": ENTITY, "miss (b*)": MISS}
MERGE_TOML = """\
[odata]
expose = ["public.sales_copy"]

[[odata.sets]]
table = "public.sales_copy"
name = "Sales"
"""
COLUMNS = (
    "salesid, listid, sellerid, buyerid, eventid, dateid, qtysold, pricepaid, commission, saletime"
)


def sql(url: str, text: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url, statement_cache_size=0)
        try:
            return await conn.fetchval(text)
        finally:
            await conn.close()

    return asyncio.run(run())


def caught_up(r: Replicated) -> None:
    target = sql(r.primary, "select pg_current_wal_lsn()::text")
    while not sql(r.replica, f"select pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
        time.sleep(0.1)


def backends(r: Replicated) -> tuple[int, int]:
    """Server connections r2sf holds on the primary and on the replica."""
    q = "select count(*) from pg_stat_activity where application_name like 'r2sf%'"
    return int(sql(r.primary, q)), int(sql(r.replica, q))


@contextlib.contextmanager
def processes(
    n: int, db: str, env: dict[str, str], cache: bool, toml: str
) -> Iterator[list[Served]]:
    with contextlib.ExitStack() as stack:
        served = [
            stack.enter_context(
                r2sf_server(
                    db,
                    workers=1,
                    port=free_port(),
                    logfile=OUT / f"scaleout-{i}.log",
                    cache_mb=None if cache else 0,
                    env=env,
                    **({"toml": toml} if toml else {}),
                )
            )
            for i in range(n)
        ]
        yield served


def load(served: list[Served], path: str, seconds: float, connections: int) -> dict[str, Any]:
    """wrk on every process at once (connections split between them): summed req/s, worst p99."""
    per = max(1, connections // len(served))
    script: list[str] | None = None
    if "__N__" in path:
        script = [path, "1", "8000", "7919", str(int(time.time()) % 8000)]
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{per}", f"-d{seconds:g}s", "--latency"]
            + [x for k, v in HEADERS.items() for x in ("-H", f"{k}: {v}")]
            + (["-s", str(REPO / "bench/wrk/stride.lua")] if script else [])
            + [s.base + (path if not script else "/")]
            + (["--", *script] if script else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        for s in served
    ]
    results = [parse_wrk(p.communicate()[0]) for p in procs]
    rps = sum(r.rps or 0 for r in results)
    p99 = max(r.p99_ms or 0 for r in results)
    errors = sum(r.non_2xx + sum(r.socket_errors.values()) for r in results)
    return {"rps": round(rps), "p99_ms": round(p99, 2), "errors": errors}


def matrix(r: Replicated, args: argparse.Namespace) -> list[dict[str, Any]]:
    primary, replica = r.on_primary(DB), r.on_replica(DB)
    rows = []
    for cache in (True, False):
        for route in ("direct", "pooler", "follower"):
            for n in (1, 2):
                with contextlib.ExitStack() as stack:
                    env = {}
                    if route == "follower":
                        env["DATABASE_FOLLOWER_URL"] = replica
                    if route == "pooler":  # a new one per cell: its server connections go too
                        bouncer = stack.enter_context(pgbouncer(r.primary, pool_size=8))
                        env["DATABASE_CONNECTION_POOL_URL"] = bouncer.url(DB)
                    served = stack.enter_context(processes(n, primary, env, cache, ""))
                    for name, path in SHAPES.items():
                        if cache and "__N__" in path:
                            continue  # a miss shape: the same with the cache as without
                        if "__N__" not in path:
                            load(served, path, 1, args.connections)  # warm (and cache) it
                        figures = load(served, path, args.seconds, args.connections)
                        used = backends(r)
                        row = {"cache": cache, "route": route, "processes": n, "shape": name,
                               **figures, "backends_primary": used[0],
                               "backends_replica": used[1]}  # fmt: skip
                        log(json.dumps(row))
                        rows.append(row)
    return rows


def merge_under_load(r: Replicated, args: argparse.Namespace) -> dict[str, Any]:
    """List-view p99 (16 connections) while `r2sf sync` merges a 10% change into the exposed
    table. wrk runs in --slice-second slices (2 s by default) while the sync is running; the worst slice's p99 is
    reported (a conservative bound on the p99 over the whole merge)."""
    admin = r.primary
    ensure_tickit(admin, SRC, args.merge_rows)
    work = OUT / "scaleout-sync"
    work.mkdir(parents=True, exist_ok=True)
    (work / "r2sf.toml").write_text(
        MERGE_TOML
        + f'\n[[sync.jobs]]\nname = "sales"\nquery = "select {COLUMNS} from public.sales"\n'
        'target = "public.sales_copy"\nkey = ["salesid"]\n'
    )
    target = r.on_primary(DB)
    env = dict(os.environ, DATABASE_URL=target, REDSHIFT_URL=r.on_primary(SRC),
               R2SF_CONFIG=str(work / "r2sf.toml"))  # fmt: skip
    r2sf = str(REPO / ".venv/bin/r2sf")
    t0 = time.monotonic()
    subprocess.run([r2sf, "sync", "sales"], env=env, check=True, capture_output=True)
    log(f"first load of {args.merge_rows:,} rows: {time.monotonic() - t0:.1f} s")
    sql(r.on_primary(SRC), "update sales set pricepaid = pricepaid + 1 where salesid % 10 = 0")
    out: dict[str, Any] = {"rows": args.merge_rows, "changed": args.merge_rows // 10}
    with processes(1, target, {}, True, MERGE_TOML) as served:
        load(served, LIST_VIEW, 1, args.connections)
        out["before"] = load(served, LIST_VIEW, args.seconds, args.connections)
        t0 = time.monotonic()
        sync = subprocess.Popen([r2sf, "sync", "sales"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        slices: list[dict[str, Any]] = []
        while sync.poll() is None:
            slices.append(load(served, LIST_VIEW, args.slice, args.connections))
        out["merge_seconds"] = round(time.monotonic() - t0, 1)
        out["sync_exit"] = sync.returncode
        out["during"] = {
            "slices": len(slices),
            "worst_p99_ms": max((s["p99_ms"] for s in slices), default=None),
            "p99_ms_per_slice": [s["p99_ms"] for s in slices],
            "rps": round(sum(s["rps"] for s in slices) / max(1, len(slices))),
            "errors": sum(s["errors"] for s in slices),
        }
        out["after"] = load(served, LIST_VIEW, args.seconds, args.connections)
    sql(r.on_primary(SRC), "update sales set pricepaid = pricepaid - 1 where salesid % 10 = 0")
    log(json.dumps(out))
    return out


def print_matrix(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| cache | route | serve processes | shape | req/s | p99 ms | PG backends (primary+replica) |"
    )
    print("|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {'on' if x['cache'] else 'off'} | {x['route']} | {x['processes']} | {x['shape']} |"
              f" {x['rps']:,} | {x['p99_ms']} | {x['backends_primary']}+{x['backends_replica']}"
              f"{' ERRORS ' + str(x['errors']) if x['errors'] else ''} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="TICKIT sales rows served")
    parser.add_argument("--merge-rows", type=int, default=1_000_000, help="rows of the merge run")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per cell")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-merge", action="store_true")
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--slice", type=float, default=2.0, help="wrk slice during the merge")
    args = parser.parse_args(argv)
    ensure_wrk()
    OUT.mkdir(parents=True, exist_ok=True)
    with primary_with_replica() as r:
        ensure_tickit(r.primary, DB, args.rows)
        caught_up(r)
        rows = [] if args.skip_matrix else matrix(r, args)
        merge = None if args.skip_merge else merge_under_load(r, args)
    print_matrix(rows)
    if merge:
        print(f"\nmerge of a 10% change into {merge['rows']:,} exposed rows"
              f" ({merge['merge_seconds']} s, exit {merge['sync_exit']}), list view at"
              f" {args.connections} connections, cache on:")  # fmt: skip
        print(
            f"  before: {merge['before']}\n  during: {merge['during']}\n  after:  {merge['after']}"
        )
    (OUT / "scaleout.json").write_text(json.dumps({"matrix": rows, "merge": merge}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
