"""Change-tracking benchmark: what tracking adds to a sync, and what a Salesforce poll costs.

1. A 10% change merged into a table of `--rows` rows by the sync engine, with change tracking
   off and on (data-version triggers in both, as the service installs them), interleaved over
   `--rounds` rounds; median seconds and the on/off ratio (goal: at most 1.3).
2. Against a running `r2sf serve`: the time of a poll with nothing new (median of `--polls`),
   and of a poll that returns 10,000 changes through its pages.

    .venv/bin/python bench/changes_bench.py [--rows N] [--rounds K] [--server URL]

It reports; it never asserts, and exits 0 once run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import CREDENTIALS, OUT, free_port, log, r2sf_server, with_database

from odata import changes
from odata.catalog import SetOptions, load_model
from odata.versions import VersionTracker
from sync import schema
from sync.config import Job
from sync.engine import run_job
from sync.progress import Reporter

SRC = "r2sf_bench_ct_src"
TARGETS = {"off": "r2sf_bench_ct_off", "on": "r2sf_bench_ct_on"}
TABLE = "CREATE TABLE items (id int PRIMARY KEY, a int, b numeric(10, 2), label text)"
JOB = Job.model_validate(
    {"name": "items", "table": "public.items", "target": "public.items", "key": ["id"]}
)
TOML = """
[odata]
expose = ["public.items"]
page_size = 1000

[[odata.sets]]
table = "public.items"
change_tracking = true
"""


async def admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def prepare(server: str, rows: int) -> None:
    for name in (SRC, *TARGETS.values()):
        await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin(server, f'CREATE DATABASE "{name}"')
    await execute(
        with_database(server, SRC),
        f"{TABLE}; INSERT INTO items SELECT g, g % 1000, g / 100.0, 'label ' || g"
        f" FROM generate_series(1, {rows}) g",
    )
    for mode, name in TARGETS.items():
        url = with_database(server, name)
        await execute(url, TABLE)
        # The triggers the service installs: data versions always, the change log when on.
        conn = await asyncpg.connect(url)
        try:
            await schema.migrate(conn)  # as the service does at start-up
            sets = [SetOptions("public.items", change_tracking=mode == "on")]
            model = await load_model(conn, expose=["public.items"], sets=sets)
            if mode == "on":
                (es,) = model.entity_sets
                oid = await conn.fetchval("SELECT 'public.items'::regclass::oid")
                await changes.install(conn, es, oid)
        finally:
            await conn.close()
        tracker = VersionTracker(url)
        await tracker.start(model.entity_sets)
        await tracker.close()
        await sync(server, name)  # the first load


async def sync(server: str, target: str) -> float:
    started = time.perf_counter()
    await run_job(
        JOB,
        target_url=with_database(server, target),
        source_url=with_database(server, SRC),
        reporter=Reporter(stream=open("/dev/null", "w"), tty=False),  # noqa: SIM115
    )
    return time.perf_counter() - started


async def merge_rounds(server: str, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(rounds):
        # A different 10% each round.
        await execute(
            with_database(server, SRC),
            f"UPDATE items SET a = a + 1 WHERE id % 10 = {r % 10}",
        )
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for mode in order:
            times[mode].append(await sync(server, TARGETS[mode]))
            log(f"round {r + 1}: tracking {mode}: {times[mode][-1]:.2f} s")
    return times


def polls(server: str, count: int) -> dict[str, float]:
    url = with_database(server, TARGETS["on"])
    port = free_port()
    auth = CREDENTIALS
    logfile = OUT / "changes-serve.log"
    with (
        r2sf_server(url, workers=1, port=port, logfile=logfile, toml=TOML) as served,
        httpx.Client(auth=auth, timeout=120) as client,
    ):
        start = client.get(
            served.root + "items?$select=id,a&$count=true&$top=0",
            headers={"Prefer": "odata.track-changes"},
        ).json()
        link = start["@odata.deltaLink"]
        empty = []
        for _ in range(count):
            t0 = time.perf_counter()
            body = client.get(link).json()
            empty.append(time.perf_counter() - t0)
            link = body["@odata.deltaLink"]
        asyncio.run(execute(url, "UPDATE items SET label = label || '.' WHERE id <= 10000"))
        t0 = time.perf_counter()
        seen = pages = 0
        while True:
            body = client.get(link).json()
            pages += 1
            seen += len(body["value"])
            if "@odata.deltaLink" in body:
                break
            link = body["@odata.nextLink"]
        full = time.perf_counter() - t0
    return {
        "empty_poll_ms": statistics.median(empty) * 1000,
        "empty_poll_p90_ms": sorted(empty)[int(len(empty) * 0.9)] * 1000,
        "poll_10000_ms": full * 1000,
        "poll_10000_pages": pages,
        "poll_10000_entries": seen,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    log(f"preparing {args.rows:,} rows in three databases")
    asyncio.run(prepare(args.server, args.rows))
    times = asyncio.run(merge_rounds(args.server, args.rounds))
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    poll = polls(args.server, args.polls)
    result = {"rows": args.rows, "merge_10pct_off_s": off, "merge_10pct_on_s": on, **poll}
    # Each round runs both back to back: the median of the per-round ratios is the figure least
    # moved by the machine's load changing between rounds.
    paired = statistics.median(a / b for a, b in zip(times["on"], times["off"], strict=True))
    result["ratio"] = paired
    print(f"\n10% change of {args.rows:,} rows, median of {args.rounds} interleaved rounds:")
    print(f"  tracking off {off:.2f} s, on {on:.2f} s; on/off per round, median {paired:.2f}x"
          " (goal <= 1.3x)")  # fmt: skip
    print(f"poll with nothing new: median {poll['empty_poll_ms']:.1f} ms,"
          f" p90 {poll['empty_poll_p90_ms']:.1f} ms")  # fmt: skip
    print(f"poll of 10,000 changes: {poll['poll_10000_ms']:.0f} ms over"
          f" {poll['poll_10000_pages']} pages ({poll['poll_10000_entries']} entries)")  # fmt: skip
    (OUT / "changes.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
