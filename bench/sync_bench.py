"""Sync benchmark: `r2sf sync` on TICKIT `sales`, beside raw baselines measured in the same run.

Runs the product as a user does (`.venv/bin/r2sf sync` as a child process) for a first load, an
unchanged rerun, a second unchanged rerun (the steady state of a scheduled job), a rerun after a
0.1% change and one after a further 10% change, from PostgreSQL
and through the Redshift shim, and prints wall time, rows/s, rows written (pg_stat_user_tables),
bytes read from the source (the COPY/CSV payload the sync received), WAL written (the server's
pg_current_wal_lsn() before and after: server-wide, so use --embedded for a quiet figure) and
peak RSS, with each rerun's time as a ratio of the same path's first load in the same round.
Each run starts from a checkpointed server, and each round from the source in key order.
It reports; it never asserts, and exits 0 once run even when a target is missed.

    .venv/bin/python bench/sync_bench.py [--rows N] [--repeat K] [--embedded | --server URL]
        [--no-baselines] [--db-prefix NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/ is a directory of scripts, not a package
    OUT,
    REPO,
    ensure_tickit,
    log,
    mib,
    psql,
    with_database,
)

DB_PREFIX = "r2sf_bench"
PATHS = ("PG", "Redshift")  # the source paths: PostgreSQL, and the Redshift driver via the shim
TARGET = "public.sales_copy"
RAW_TARGET = "bench_raw_copy"
COLUMNS = (
    "salesid, listid, sellerid, buyerid, eventid, dateid, qtysold, pricepaid, commission, saletime"
)
SOURCE_QUERY = f"select {COLUMNS} from public.sales"
# Deterministic changes (name, fraction of rows, predicate), applied one after the other and
# reverted at the end so reruns of the benchmark find the source as tickit.sql made it. The
# predicates are disjoint (multiples of 1000 are 0 mod 10), so each rerun must write exactly
# its own rows.
CHANGES = (("0.1% change", 1000, "salesid % 1000 = 0"), ("10% change", 10, "salesid % 10 = 5"))
CHANGE_SQL = "update public.sales set pricepaid = pricepaid {op} 1 where {where}"
# Same shape as tickit.sql's sales, primary key included, for the raw COPY baseline.
RAW_TARGET_DDL = f"""
drop table if exists {RAW_TARGET};
create table {RAW_TARGET} (
  salesid integer not null primary key, listid integer not null, sellerid integer not null,
  buyerid integer not null, eventid integer not null, dateid smallint not null,
  qtysold smallint not null, pricepaid numeric(8,2), commission numeric(8,2),
  saletime timestamp without time zone
);
"""
SCALE_ROWS = 5_000_000
SYNC_OUT = OUT / "sync"


# ---------------------------------------------------------------- child processes


@dataclass
class ChildRun:
    seconds: float
    peak_rss: int  # bytes; for a pipeline, the sum of its processes' peaks
    exit_code: int
    output: str = ""


def run_measured(
    command: Sequence[str], env: dict[str, str] | None = None, log_file: Path | None = None
) -> ChildRun:
    """Run one child and take its own peak RSS from wait4(), exact and free of sampling gaps."""
    out: IO[Any] | int = open(log_file, "w") if log_file else subprocess.DEVNULL  # noqa: SIM115
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if not isinstance(out, int):
            out.close()
    text = log_file.read_text(errors="replace") if log_file else ""
    return ChildRun(seconds, usage.ru_maxrss * 1024, proc.returncode, text)


def copy_pipe(src_url: str, dst_url: str) -> ChildRun:
    """`psql \\copy (select ...) to stdout | psql \\copy t from stdin`, as a shell would run it."""
    out_cmd = ["psql", "-X", "-q", "-d", src_url, "-c", f"\\copy ({SOURCE_QUERY}) to stdout"]
    in_cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dst_url]
    in_cmd += ["-c", f"\\copy {RAW_TARGET} from stdin"]
    started = time.perf_counter()
    reader = subprocess.Popen(out_cmd, stdout=subprocess.PIPE)
    writer = subprocess.Popen(in_cmd, stdin=reader.stdout, stdout=subprocess.DEVNULL)
    assert reader.stdout is not None
    reader.stdout.close()  # so the reader sees a broken pipe if the writer dies
    peak, code = 0, 0
    for proc in (reader, writer):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak += usage.ru_maxrss * 1024
        code = code or proc.returncode
    return ChildRun(time.perf_counter() - started, peak, code)


@contextlib.contextmanager
def shim_process(upstream_url: str) -> Iterator[tuple[str, int]]:
    """The Redshift shim as its own process, so its CPU is not charged to the process measured."""
    command = [sys.executable, str(REPO / "tests" / "redshift_shim.py"), upstream_url]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) < 3 or line[0] != "listening":
            raise SystemExit(f"the Redshift shim did not start (said {line!r})")
        yield line[1], int(line[2])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- bare driver fetch (child side)


def fetch_only(host: str, port: int, database: str, mode: str, size: int) -> None:
    """Child entry point: read every source row with redshift_connector and print the count."""
    import redshift_connector

    started = time.perf_counter()
    conn = redshift_connector.connect(
        host=host, port=port, user="postgres", database=database, password="", ssl=False
    )
    rows = 0
    cur = conn.cursor()
    if mode == "fetchmany":
        cur.execute(SOURCE_QUERY)
        while batch := cur.fetchmany(size):
            rows += len(batch)
    else:
        cur.execute("begin")
        cur.execute(f"declare bench_c no scroll cursor for {SOURCE_QUERY}")
        while True:
            cur.execute(f"fetch forward {size} from bench_c")
            batch = cur.fetchall()
            if not batch:
                break
            rows += len(batch)
        cur.execute("close bench_c")
        cur.execute("commit")
    conn.close()
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


# ---------------------------------------------------------------- target statistics


def rows_written(dst_url: str) -> int:
    """Inserted + updated + deleted tuples of the target table, as the statistics system counts."""
    schema, table = TARGET.split(".")
    value = psql(
        dst_url,
        "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) from pg_stat_user_tables"
        f" where schemaname = '{schema}' and relname = '{table}'",
    )
    return int(value or 0)


def settled_rows_written(dst_url: str, timeout: float = 10.0) -> int:
    """The counter once the sync's backends have exited and flushed their statistics.

    A backend reports its counts when its session ends, a moment after the client process has
    gone, so poll until two reads a quarter-second apart agree.
    """
    deadline = time.monotonic() + timeout
    last = rows_written(dst_url)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = rows_written(dst_url)
        if now == last and not _sessions_on(dst_url):
            return now
        last = now
    return last


def _sessions_on(dst_url: str) -> bool:
    """True while another client session is still connected to the target database."""
    name = urlsplit(dst_url).path.lstrip("/")
    others = psql(
        dst_url,
        "select count(*) from pg_stat_activity where backend_type = 'client backend'"
        f" and datname = '{name}' and pid <> pg_backend_pid()",
    )
    return others not in ("", "0")


# ---------------------------------------------------------------- scenarios


@dataclass
class Measure:
    name: str
    seconds: float
    rows: int
    written: int | None
    peak_rss: int
    ok: bool
    note: str = ""
    source_bytes: int | None = None  # the COPY/CSV payload the sync read from the source
    wal_bytes: int | None = None  # WAL the server wrote during the run (server-wide)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class Bench:
    server_url: str
    rows: int
    fetch_size: int
    batch_size: int
    db_prefix: str = DB_PREFIX
    src_url: str = ""
    dst_url: str = ""
    results: dict[str, list[Measure]] = field(default_factory=dict)

    @property
    def src_db(self) -> str:
        return f"{self.db_prefix}_src"

    @property
    def dst_db(self) -> str:
        return f"{self.db_prefix}_dst"

    def record(self, m: Measure) -> None:
        self.results.setdefault(m.name, []).append(m)
        rss = mib(m.peak_rss)
        written = "-" if m.written is None else f"{m.written:,}"
        status = "ok" if m.ok else f"FAILED {m.note}"
        log(
            f"{m.name}: {m.seconds:.2f} s, written {written}, source {mib(m.source_bytes)},"
            f" WAL {mib(m.wal_bytes)}, peak RSS {rss}, {status}"
        )

    # -- setup

    def prepare_source(self) -> None:
        ensure_tickit(self.server_url, self.src_db, self.rows)
        self.src_url = with_database(self.server_url, self.src_db)
        self.dst_url = with_database(self.server_url, self.dst_db)

    def reset_target(self) -> None:
        """An empty target database, so a first load starts with no table and no r2sf state."""
        psql(self.server_url, f'drop database if exists "{self.dst_db}" with (force)')
        psql(self.server_url, f'create database "{self.dst_db}"')

    def write_config(self) -> Path:
        SYNC_OUT.mkdir(parents=True, exist_ok=True)
        path = SYNC_OUT / "r2sf.toml"
        path.write_text(
            "[[sync.jobs]]\n"
            'name = "sales"\n'
            f'query = "{SOURCE_QUERY}"\n'
            f'target = "{TARGET}"\n'
            'key = ["salesid"]\n'
            "create = true\n"
            'deletes = "hard"\n'
            f"batch_size = {self.batch_size}\n"
            f"fetch_size = {self.fetch_size}\n"
        )
        return path

    # -- baselines

    def baseline_copy_pipe(self) -> None:
        psql(self.dst_url, RAW_TARGET_DDL)
        run = copy_pipe(self.src_url, self.dst_url)
        copied = int(psql(self.dst_url, f"select count(*) from {RAW_TARGET}"))
        psql(self.dst_url, f"drop table {RAW_TARGET}")
        ok = run.exit_code == 0 and copied == self.rows
        note = "" if ok else f"exit {run.exit_code}, {copied:,} rows copied"
        self.record(
            Measure("raw psql \\copy pipe", run.seconds, copied, None, run.peak_rss, ok, note)
        )

    def baseline_fetch(self, shim: tuple[str, int], mode: str) -> None:
        size = 10_000 if mode == "fetchmany" else self.fetch_size
        label = (
            "driver fetchmany(10000), shim"
            if mode == "fetchmany"
            else f"driver FETCH FORWARD {size}, shim"
        )
        command = [sys.executable, str(Path(__file__).resolve()), "--fetch-only", mode]
        command += ["--shim", f"{shim[0]}:{shim[1]}", "--fetch-size", str(size)]
        command += ["--db-prefix", self.db_prefix]
        out = SYNC_OUT / f"fetch-{mode}.log"
        run = run_measured(command, log_file=out)
        fetched = -1
        with contextlib.suppress(ValueError, IndexError):
            fetched = json.loads(run.output.strip().splitlines()[-1])["rows"]
        ok = run.exit_code == 0 and fetched == self.rows
        note = "" if ok else f"exit {run.exit_code}, {fetched:,} rows, see {out}"
        self.record(Measure(label, run.seconds, self.rows, None, run.peak_rss, ok, note))

    # -- the product

    def sync(self, name: str, source_url: str, config: Path, want: int | None = None) -> Measure:
        """One `r2sf sync`; `want` is the number of rows it must write (None: not checked)."""
        r2sf = REPO / ".venv" / "bin" / "r2sf"
        env = dict(os.environ, R2SF_CONFIG=str(config), DATABASE_URL=self.dst_url)
        env["REDSHIFT_URL"] = source_url
        before = settled_rows_written(self.dst_url)
        # Each run starts from a checkpointed server: the checkpoint the last run's WAL set off
        # (a first load writes about 600 MB of it) would otherwise land in this one.
        with contextlib.suppress(subprocess.CalledProcessError):  # superuser or pg_checkpoint
            psql(self.server_url, "checkpoint")
        lsn = psql(self.dst_url, "select pg_current_wal_lsn()")
        slug = name.lower().replace(" ", "-").replace("%", "pct")
        out = SYNC_OUT / f"{slug}.log"
        run = run_measured([str(r2sf), "sync", "sales"], env=env, log_file=out)
        wal = int(float(psql(self.dst_url, f"select pg_current_wal_lsn() - '{lsn}'::pg_lsn")))
        written = settled_rows_written(self.dst_url) - before
        ok = run.exit_code == 0
        note = "" if ok else f"exit {run.exit_code}: {_last_line(run.output)} (log {out})"
        if ok:
            ok, note = self.check_copy()
        if ok and want is not None and written != want:
            ok, note = False, f"wrote {written:,} rows, expected exactly {want:,}"
        m = Measure(name, run.seconds, self.rows, written, run.peak_rss, ok, note)
        m.source_bytes, m.wal_bytes = _source_bytes(run.output), wal
        self.record(m)
        return m

    def check_copy(self) -> tuple[bool, str]:
        """Whether the target now holds exactly the source's rows, value for value.

        Compares a row count and an order-independent sum of per-row hashes of the text form,
        so a lost scale, a shifted timestamp or a missing row shows up as a failed run.
        """
        digest = "select count(*) || ' ' || coalesce(sum(hashtext(t::text)::bigint), 0) from ({}) t"
        src = psql(self.src_url, digest.format(SOURCE_QUERY))
        dst = psql(self.dst_url, digest.format(f"select {COLUMNS} from {TARGET}"))
        if src == dst:
            return True, ""
        return False, f"target differs from source (count, hash: {dst} vs {src})"

    def first_load_and_reruns(self, path: str, source_url: str, config: Path) -> None:
        """A first load into an empty target, then reruns: unchanged, 0.1%, a further 10%."""
        if not self.source_in_key_order():  # a round of an earlier benchmark stopped midway
            self.restore_source_order()
        self.reset_target()
        self.sync(f"{path} first load", source_url, config)
        self.sync(f"{path} rerun unchanged", source_url, config, want=0)
        # A scheduled job's usual run: nothing new since a rerun (which kept the target's
        # fingerprint summary, where the job may keep one).
        self.sync(f"{path} rerun unchanged again", source_url, config, want=0)
        applied = []
        try:
            for label, one_in, where in CHANGES:
                psql(self.src_url, CHANGE_SQL.format(op="+", where=where))
                applied.append(where)
                self.sync(f"{path} rerun {label}", source_url, config, want=self.rows // one_in)
        finally:
            for where in applied:
                psql(self.src_url, CHANGE_SQL.format(op="-", where=where))
            self.restore_source_order()

    def restore_source_order(self) -> None:
        """Leave the source as tickit.sql made it, rows stored in key order: each change moves
        the rows it updates (and reverting moves them again), so after a round a first load
        reads them out of key order and every figure of the next round shifts (5M rows: a 10%
        change's merge took 34 s instead of 22 s)."""
        psql(self.src_url, "cluster public.sales using sales_pkey")
        psql(self.src_url, "analyze public.sales")

    def source_in_key_order(self) -> bool:
        value = psql(
            self.src_url,
            "select correlation from pg_stats where schemaname = 'public' and tablename = 'sales'"
            " and attname = 'salesid'",
        )
        return bool(value) and float(value) >= 0.99

    def redshift_url(self, shim: tuple[str, int]) -> str:
        return f"redshift://postgres@{shim[0]}:{shim[1]}/{self.src_db}?sslmode=disable"

    def run_all(
        self, repeat: int, syncs: bool, baselines: bool = True, paths: Sequence[str] = PATHS
    ) -> None:
        self.prepare_source()
        config = self.write_config()
        with shim_process(self.src_url) as shim:
            for i in range(repeat):
                log(f"round {i + 1} of {repeat}, {self.rows:,} rows")
                self.reset_target()
                if baselines:
                    self.baseline_copy_pipe()
                    self.baseline_fetch(shim, "fetchmany")
                    self.baseline_fetch(shim, "cursor")
                if syncs and "PG" in paths:
                    self.first_load_and_reruns("PG", self.src_url, config)
                if syncs and "Redshift" in paths:
                    self.first_load_and_reruns("Redshift", self.redshift_url(shim), config)

    def run_scale(self) -> None:
        """First loads only, at the bigger size: what the peak-RSS comparison needs."""
        self.prepare_source()
        config = self.write_config()
        with shim_process(self.src_url) as shim:
            self.reset_target()
            self.sync("PG first load", self.src_url, config)
            self.reset_target()
            self.sync("Redshift first load", self.redshift_url(shim), config)

    def median(self, name: str) -> Measure | None:
        runs = self.results.get(name)
        if not runs:
            return None
        good = [m for m in runs if m.ok] or runs
        written = [m.written for m in good if m.written is not None]
        return Measure(
            name,
            statistics.median(m.seconds for m in good),
            good[0].rows,
            int(statistics.median_low(written)) if written else None,
            int(statistics.median_low(m.peak_rss for m in good)),
            all(m.ok for m in runs),
            "; ".join(sorted({m.note for m in runs if m.note})),
            _median_of(m.source_bytes for m in good),
            _median_of(m.wal_bytes for m in good),
        )

    def ratio(self, name: str, first: str) -> float | None:
        """Median over rounds of one run's time over the same round's first load."""
        runs, firsts = self.results.get(name, []), self.results.get(first, [])
        ratios = [m.seconds / f.seconds for m, f in zip(runs, firsts, strict=False) if f.seconds]
        return statistics.median(ratios) if ratios else None


def _median_of(values: Iterator[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return int(statistics.median_low(known)) if known else None


def _source_bytes(output: str) -> int | None:
    """The bytes the sync reports it read from the source (its staged/loaded event)."""
    for line in output.splitlines():
        if line.startswith(("event=staged", "event=loaded")):
            for part in line.split():
                if part.startswith("bytes="):
                    return int(part.removeprefix("bytes="))
    return None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


# ---------------------------------------------------------------- report


def table(bench: Bench) -> list[str]:
    lines = [
        f"{'scenario':<34} {'wall s':>8} {'x first':>8} {'rows/s':>9} {'written':>10}"
        f" {'source':>8} {'WAL':>8} {'peak RSS':>9}  status",
    ]
    for name in bench.results:
        m = bench.median(name)
        assert m is not None
        written = "-" if m.written is None else f"{m.written:,}"
        status = "ok" if m.ok else f"FAILED: {m.note}"
        ratio = bench.ratio(name, _first_load(name)) if " rerun " in name else None
        x = "-" if ratio is None else f"{ratio:.2f}x"
        lines.append(
            f"{name:<34} {m.seconds:>8.2f} {x:>8} {m.rows_per_s / 1000:>8.0f}k {written:>10}"
            f" {mib(m.source_bytes):>8} {mib(m.wal_bytes):>8} {mib(m.peak_rss):>9}  {status}"
        )
    return lines


def _first_load(name: str) -> str:
    return name.split(" rerun ", 1)[0] + " first load"


# The goal: a rerun's time as a fraction of the same path's first load.
RERUN_GOALS = (
    ("rerun unchanged", 0.3),
    ("rerun unchanged again", 0.3),
    ("rerun 0.1% change", 0.4),
    ("rerun 10% change", 1.0),
)


def _ratio_line(label: str, num: Measure | None, den: Measure | None, limit: float) -> str:
    if num is None or den is None or not den.seconds:
        return f"{label}: not measured"
    ratio = num.seconds / den.seconds
    verdict = "met" if ratio <= limit and num.ok else "MISSED"
    return f"{label}: {ratio:.2f}x (target <= {limit:g}x) {verdict}"


def targets(bench: Bench, scale: Bench | None) -> list[str]:
    get = bench.median
    fetch_label = f"driver FETCH FORWARD {bench.fetch_size}, shim"
    lines = [
        _ratio_line(
            "PG first load / raw COPY pipe", get("PG first load"), get("raw psql \\copy pipe"), 2
        ),
        _ratio_line(
            "Redshift first load / bare fetchmany(10000)",
            get("Redshift first load"),
            get("driver fetchmany(10000), shim"),
            1.5,
        ),
        _ratio_line(
            f"Redshift first load / bare FETCH FORWARD {bench.fetch_size}",
            get("Redshift first load"),
            get(fetch_label),
            1.5,
        ),
    ]
    for path in ("PG", "Redshift"):
        for scenario, limit in RERUN_GOALS:
            name = f"{path} {scenario}"
            m, ratio = get(name), bench.ratio(name, f"{path} first load")
            if m is None or ratio is None:
                continue
            verdict = "met" if ratio <= limit and m.ok else "MISSED"
            lines.append(
                f"{name}: {ratio:.2f}x the first load (target <= {limit:g}x), {m.written:,} rows"
                f" written{'' if m.ok else ' (' + m.note + ')'} {verdict}"
            )
    syncs = [get(n) for n in bench.results if n.startswith(("PG ", "Redshift "))]
    peaks = [m.peak_rss for m in syncs if m is not None]
    if peaks:
        verdict = "met" if max(peaks) < 200 * 2**20 else "MISSED"
        lines.append(f"peak RSS of r2sf sync: max {mib(max(peaks))} (target < 200 MB) {verdict}")
    if scale is not None:
        for name in ("PG first load", "Redshift first load"):
            small, big = get(name), scale.median(name)
            if small is None or big is None or not small.peak_rss:
                lines.append(f"{name} peak RSS at {scale.rows:,} rows: not measured")
                continue
            growth = big.peak_rss / small.peak_rss
            verdict = "met" if growth <= 1.2 and big.ok else "MISSED"
            lines.append(
                f"{name} peak RSS {mib(small.peak_rss)} at {bench.rows:,} rows,"
                f" {mib(big.peak_rss)} at {scale.rows:,}: {growth:.2f}x (target <= 1.2x) {verdict}"
            )
    return lines


def save(bench: Bench, scale: Bench | None, args: argparse.Namespace) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"sync-{datetime.now():%Y%m%d-%H%M%S}.json"
    data = {
        "args": vars(args),
        "runs": {k: [asdict(m) for m in v] for k, v in bench.results.items()},
        "scale_runs": {k: [asdict(m) for m in v] for k, v in scale.results.items()}
        if scale
        else None,
    }
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


# ---------------------------------------------------------------- entry point


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    if not args.embedded:
        yield args.server
        return
    import pgserver

    # Kept between runs so the TICKIT data need not be regenerated every time.
    datadir = OUT / "sync-pgdata"
    datadir.mkdir(parents=True, exist_ok=True)
    pg = pgserver.get_server(datadir, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield pg.get_uri()
    finally:
        pg.cleanup()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000, help="sales rows (default 1,000,000)")
    p.add_argument("--repeat", type=int, default=1, help="rounds; figures are medians")
    p.add_argument(
        "--server",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the PostgreSQL server holding both databases",
    )
    p.add_argument("--embedded", action="store_true", help="start a private pgserver instead")
    p.add_argument(
        "--scale-check",
        action="store_true",
        help="also first-load --scale-rows rows, to compare peak RSS with --rows",
    )
    p.add_argument("--scale-rows", type=int, default=SCALE_ROWS, help="default 5,000,000")
    p.add_argument(
        "--baselines-only", action="store_true", help="measure only the baselines, not r2sf"
    )
    p.add_argument("--no-baselines", action="store_true", help="measure only r2sf sync")
    p.add_argument(
        "--paths", default=",".join(PATHS), help="source paths to sync from (default PG,Redshift)"
    )
    p.add_argument(
        "--db-prefix", default=DB_PREFIX, help="source and target databases: PREFIX_src, _dst"
    )
    p.add_argument("--fetch-size", type=int, default=1000, help="FETCH FORWARD n (job fetch_size)")
    p.add_argument("--batch-size", type=int, default=10_000, help="the job's batch_size")
    # Internal: the bare driver fetch runs in its own process so its RSS is its own.
    p.add_argument("--fetch-only", choices=["fetchmany", "cursor"], help=argparse.SUPPRESS)
    p.add_argument("--shim", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fetch_only:
        host, port = args.shim.rsplit(":", 1)
        fetch_only(host, int(port), f"{args.db_prefix}_src", args.fetch_only, args.fetch_size)
        return 0
    if not args.baselines_only and not (REPO / "sync" / "commands.py").exists():
        log("sync/commands.py does not exist yet: measuring the baselines only")
        args.baselines_only = True
    with server(args) as url:
        bench = Bench(url, args.rows, args.fetch_size, args.batch_size, args.db_prefix)
        paths = [p.strip() for p in args.paths.split(",")]
        bench.run_all(args.repeat, not args.baselines_only, not args.no_baselines, paths)
        scale = None
        if args.scale_check and not args.baselines_only:
            scale = Bench(url, args.scale_rows, args.fetch_size, args.batch_size, args.db_prefix)
            scale.run_scale()
            # Leave the source at the size the next ordinary run expects.
            ensure_tickit(url, f"{args.db_prefix}_src", args.rows)
    print(f"\nr2sf sync benchmark: {args.rows:,} TICKIT sales rows, median of {args.repeat}")
    print("\n".join(table(bench)))
    if scale is not None:
        print(f"\nscale check, {args.scale_rows:,} rows")
        print("\n".join(table(scale)[1:]))
    print("\ntargets")
    print("\n".join("  " + line for line in targets(bench, scale)))
    print(f"\nfigures saved to {save(bench, scale, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
