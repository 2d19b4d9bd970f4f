"""The Redshift source path: the real `redshift_connector` reading through the test shim with a
server-side cursor, in bounded FETCH FORWARD batches, into the same zero-write merge.

Every test runs twice: against a shim that does not negotiate `client_protocol_version` (the
driver reads as protocol 0) and against one that negotiates the binary protocol as a current
cluster does (tests/redshift_shim.py), where the driver asks for binary results by default."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync import redshift
from sync.errors import SourceError
from sync.progress import Reporter
from sync.source import RedshiftSource, redshift_connect_args
from tests.conftest import Databases
from tests.redshift_shim import RedshiftShim
from tests.test_sync_support import Pair, changed, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


@pytest.fixture(scope="module", params=["text", "binary"])
def shim(pair: Pair, request: pytest.FixtureRequest) -> Iterator[RedshiftShim]:
    with RedshiftShim(pair.source, protocol=request.param) as s:
        yield s
    assert s.errors == []  # no binary value the shim could not give as a cluster would


def sales(pair: Pair, rows: int) -> str:
    name = unique("sales")
    x(
        pair.source,
        f"CREATE TABLE {name} (salesid int PRIMARY KEY, qtysold smallint,"
        " pricepaid numeric(8,2), saletime timestamp, note varchar(20), paid boolean);"
        f" INSERT INTO {name} SELECT g, g % 8, g * 0.25, '2008-01-01'::timestamp"
        f" + g * interval '1 minute', CASE WHEN g % 5 = 0 THEN NULL ELSE 'n' || g END, g % 2 = 0"
        f" FROM generate_series(1, {rows}) g",
    )
    return name


def test_redshift_source_loads_then_reruns_without_writes(pair: Pair, shim: RedshiftShim) -> None:
    src = sales(pair, 2500)
    job = pair.job(
        name=src, table=f"public.{src}", target=f"public.{src}", key=["salesid"], fetch_size=300
    )
    first = pair.sync(job, source_url=shim.url())
    assert first.inserted == 2500
    got = q(pair.target, f"SELECT * FROM {src} ORDER BY salesid")
    want = q(pair.source, f"SELECT * FROM {src} ORDER BY salesid")
    assert [tuple(r) for r in got] == [tuple(r) for r in want]
    before = pair.versions(src, "salesid")
    stat = pair.writes(f"public.{src}")
    again = pair.sync(job, source_url=shim.url())
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2500)
    assert changed(before, pair.versions(src, "salesid")) == set()
    assert pair.writes(f"public.{src}") == stat


def test_redshift_source_one_percent_change_writes_exactly_those_rows(
    pair: Pair, shim: RedshiftShim
) -> None:
    src = sales(pair, 2000)
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["salesid"])
    pair.sync(job, source_url=shim.url())
    x(pair.source, f"UPDATE {src} SET pricepaid = pricepaid + 1 WHERE salesid % 100 = 0")
    before = pair.versions(src, "salesid")
    result = pair.sync(job, source_url=shim.url())
    assert result.updated == 20
    assert changed(before, pair.versions(src, "salesid")) == set(range(100, 2001, 100))


def test_redshift_fetches_never_exceed_fetch_size(pair: Pair, shim: RedshiftShim) -> None:
    src = sales(pair, 1001)

    async def batch_sizes() -> list[int]:
        s = RedshiftSource(shim.url(), f"select * from {src}", None, fetch_size=250)
        await s.open()
        sizes = []
        try:
            async for chunk in s.batches():
                sizes.append(s.fetch_rows[-1])
                assert chunk.count(b"\n") == sizes[-1]  # one CSV line per row here
        finally:
            await s.close()
        return sizes

    assert asyncio.run(batch_sizes()) == [250, 250, 250, 250, 1]


def test_redshift_incremental_watermark_is_bound_not_spliced(
    pair: Pair, shim: RedshiftShim
) -> None:
    src = sales(pair, 100)
    job = pair.job(
        name=src,
        table=f"public.{src}",
        target=f"public.{src}",
        key=["salesid"],
        incremental={"column": "saletime"},
    )
    assert pair.sync(job, source_url=shim.url()).rows_read == 100
    x(pair.source, f"INSERT INTO {src} VALUES (101, 1, 1.00, '2009-01-01', 'late', true)")
    second = pair.sync(job, source_url=shim.url())
    assert (second.rows_read, second.inserted) == (2, 1)  # the watermark's own row, re-read
    assert second.watermark == "2009-01-01 00:00:00"


def test_redshift_url_turns_ssl_on_unless_disabled() -> None:
    on = redshift_connect_args("redshift://u:p%40ss@cluster.example.com/dev")
    assert (on["ssl"], on["sslmode"], on["port"], on["password"]) == (
        True,
        "verify-ca",
        5439,
        "p@ss",
    )
    full = redshift_connect_args("redshift://u:p@h:5439/dev?sslmode=verify-full")
    assert full["sslmode"] == "verify-full"
    off = redshift_connect_args("redshift://u@h:1234/db?sslmode=disable")
    assert (off["ssl"], off["port"], off["database"]) == (False, 1234, "db")


def test_r2sf_sync_cli_reads_a_redshift_url(pair: Pair, shim: RedshiftShim, tmp_path: Path) -> None:
    src = sales(pair, 1500)
    cfg = tmp_path / "r2sf.toml"
    cfg.write_text(
        f'[[sync.jobs]]\nname = "{src}"\ntable = "public.{src}"\ntarget = "public.{src}"\n'
        'key = ["salesid"]\nfetch_size = 400\n'
    )
    environ = {**os.environ, "DATABASE_URL": pair.target, "REDSHIFT_URL": shim.url()}
    r2sf = str(Path(sys.executable).parent / "r2sf")
    res = subprocess.run(
        [r2sf, "--config", str(cfg), "sync"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert 'source="redshift://' in res.stderr and "inserted=1500" in res.stderr
    assert q(pair.target, f"SELECT count(*) FROM {src}")[0][0] == 1500


def test_redshift_values_round_trip_exactly_through_the_extract_process(
    pair: Pair, shim: RedshiftShim
) -> None:
    src = unique("types")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int PRIMARY KEY, n numeric, n2 numeric(12,4), f float8,"
        " r real, big bigint, ts timestamp, tz timestamptz, d date, t time, b boolean,"
        " txt text, vc varchar(30), raw bytea);"
        f" INSERT INTO {src} VALUES"
        " (1, 1.50, 2.1000, 0.1, 1.1, 9223372036854775807, '2008-01-01 12:34:56.789012',"
        "  '2008-01-01 12:34:56.000001+05:30', '1999-12-31', '23:59:59.999999', true,"
        "  E'tab\\there\\nnew line\\\\back \"quoted\", comma', 'ünïcødé ✓ 漢字', '\\x00ff10'),"
        " (2, 0.00000001, -12345678.0001, 1e300, -0.0, -1, '0001-01-01 00:00:00',"
        "  '2038-01-19 03:14:07.5+00', '2024-02-29', '00:00:00', false, '', '\\N', ''),"
        " (3, -12345678901234567890.123456789, NULL, 'Infinity', 'NaN', NULL, NULL, NULL,"
        "  NULL, NULL, NULL, NULL, NULL, NULL),"
        " (4, 100, 0, -2.5e-310, 3.4e38, 0, '2024-06-01 00:00:00.1', NULL, NULL, NULL,"
        "  NULL, '\\N', ' ', NULL);"
        # Types the driver cannot print back as input: read as text, staged as themselves.
        f" ALTER TABLE {src} ADD iv interval, ADD ttz timetz, ADD js jsonb;"
        f" UPDATE {src} SET iv = '1 year 2 mons 3 days 04:05:06.5', ttz = '12:00:01+02',"
        """ js = '{"a": [1, "x\\ty"]}' WHERE id = 1""",
    )
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"])
    assert pair.sync(job, source_url=shim.url()).inserted == 4
    text_rows = f"SELECT t::text FROM {src} t ORDER BY id"
    assert [r[0] for r in q(pair.target, text_rows)] == [r[0] for r in q(pair.source, text_rows)]
    again = pair.sync(job, source_url=shim.url())
    assert (again.updated, again.unchanged) == (0, 4)


def test_redshift_query_error_in_the_extract_process_is_a_source_error(
    pair: Pair, shim: RedshiftShim
) -> None:
    job = pair.job(name="broken", query="select id from no_such_table", target="public.nst",
                   key=["id"])  # fmt: skip
    with pytest.raises(SourceError) as err:
        pair.sync(job, source_url=shim.url())
    assert "ProgrammingError" in str(err.value) and "no_such_table" in str(err.value)
    assert "does not exist" in str(err.value)


def test_killing_the_sync_process_ends_its_extract_process(
    pair: Pair, shim: RedshiftShim, tmp_path: Path
) -> None:
    import psutil

    name = unique("stall")
    cfg = tmp_path / "r2sf.toml"
    cfg.write_text(
        f'[[sync.jobs]]\nname = "{name}"\ntarget = "public.{name}"\nkey = ["id"]\n'
        f'query = "select g as id from generate_series(1, 3) g'
        f" where (select pg_sleep(60)) is not null and '{name}' <> ''\"\n"
    )
    environ = {**os.environ, "DATABASE_URL": pair.target, "REDSHIFT_URL": shim.url()}
    r2sf = str(Path(sys.executable).parent / "r2sf")
    proc = subprocess.Popen([r2sf, "--config", str(cfg), "sync"], env=environ,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        child = None
        deadline = time.monotonic() + 30
        while child is None and time.monotonic() < deadline:
            kids = psutil.Process(proc.pid).children()
            child = next((k for k in kids if "sync.redshift" in k.cmdline()), None)
            time.sleep(0.05)
        assert child is not None, "no extract process started"
        # Wait until it is inside the query, then kill the parent outright.
        while time.monotonic() < deadline and not q(
            pair.source,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE $1",
            f"%{name}%",
        ):
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
        child.wait(timeout=10)  # raises psutil.TimeoutExpired if it outlives its parent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        q(
            pair.source,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND query LIKE $1",
            f"%{name}%",
        )


def test_redshift_created_target_keeps_lengths_precision_and_not_null(
    pair: Pair, shim: RedshiftShim
) -> None:
    src = sales(pair, 10)
    x(
        pair.source,
        f"UPDATE {src} SET note = '-' WHERE note IS NULL; ALTER TABLE {src} ALTER note SET NOT NULL",
    )
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}_c", key=["salesid"])
    pair.sync(job, source_url=shim.url())
    declared = (
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )
    got = [tuple(r) for r in q(pair.target, declared, f"public.{src}_c")]
    assert got == [tuple(r) for r in q(pair.source, declared, f"public.{src}")]
    assert ("pricepaid", "numeric(8,2)", False) in got and (
        "note",
        "character varying(20)",
        True,
    ) in got


@pytest.mark.parametrize("path", ["postgresql", "redshift"])
def test_progress_lines_count_rows_and_bytes_on_both_source_paths(
    pair: Pair, shim: RedshiftShim, path: str
) -> None:
    src = sales(pair, 1200)
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}_p", key=["salesid"],
                   fetch_size=500)  # fmt: skip
    out = io.StringIO()
    url = shim.url() if path == "redshift" else pair.source
    pair.sync(job, source_url=url, reporter=Reporter(stream=out, tty=False, interval=0))
    lines = [
        dict(f.split("=", 1) for f in shlex.split(line)) for line in out.getvalue().splitlines()
    ]
    progress = [(int(f["rows"]), int(f["bytes"])) for f in lines if f["event"] == "progress"]
    assert progress, out.getvalue()
    rows = [r for r, _ in progress]
    assert rows == sorted(rows) and rows[-1] == 1200
    assert all(b > 0 for _, b in progress)


def test_a_refused_redshift_connection_leaves_no_socket_open(shim: RedshiftShim) -> None:
    args = redshift_connect_args(shim.url(database="no_such_database"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception, match="no_such_database") as err:
            redshift.connect(**args)
        del err  # its traceback holds the driver's half-built connection
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_fetch_size_follows_the_clusters_node_count(databases: Databases) -> None:
    source = databases.create(
        # STV_SLICES as Redshift has it (https://docs.aws.amazon.com/redshift/latest/dg/
        # r_STV_SLICES.html): one row per slice, with the compute node it is on.
        "CREATE TABLE stv_slices (node int, slice int);"
        " CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 25000) g"
    )

    async def sizes(fetch_size: int | None) -> tuple[dict[str, object], list[int]]:
        with RedshiftShim(source) as shim:
            s = RedshiftSource(shim.url(), "select id from t", None, fetch_size)
            await s.open()
            try:
                async for _ in s.batches():
                    pass
            finally:
                await s.close()
        return s.cluster, s.fetch_rows

    cluster, fetched = asyncio.run(sizes(None))  # no STV_SLICES rows: unknown, the safe size
    assert cluster == {"nodes": None, "fetch_size": 1000} and max(fetched) == 1000
    x(source, "INSERT INTO stv_slices VALUES (0, 0), (0, 1), (1, 2), (1, 3)")
    cluster, fetched = asyncio.run(sizes(None))
    assert cluster == {"nodes": 2, "fetch_size": 10000} and fetched == [10000, 10000, 5000]
    x(source, "DELETE FROM stv_slices WHERE node = 1")
    cluster, fetched = asyncio.run(sizes(5000))  # single node: never above 1,000
    assert cluster == {"nodes": 1, "fetch_size": 1000} and max(fetched) == 1000


def test_redshifts_cursor_size_refusal_says_what_to_do(pair: Pair, shim: RedshiftShim) -> None:
    name = unique("huge")
    # The error Redshift raises at the first FETCH when the result passes the node type's cap.
    x(pair.source, f"CREATE FUNCTION {name}() RETURNS int LANGUAGE plpgsql AS $$ BEGIN"
                   " RAISE EXCEPTION 'exceeded the maximum size allowed for the total set of"
                   " cursor data: 8000MB.'; END $$")  # fmt: skip
    job = pair.job(name=name, query=f"select g as id from generate_series(1, 3) g"
                   f" where {name}() = 1", target=f"public.{name}", key=["id"])  # fmt: skip
    with pytest.raises(SourceError) as err:
        pair.sync(job, source_url=shim.url())
    assert "8000MB" in err.value.message
    assert "make the job incremental, split it into several jobs" in err.value.message
