"""The Redshift source path: the real `redshift_connector` reading through the test shim with a
server-side cursor, in bounded FETCH FORWARD batches, into the same zero-write merge."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.source import RedshiftSource, redshift_connect_args
from tests.conftest import Databases
from tests.redshift_shim import RedshiftShim
from tests.test_sync_support import Pair, changed, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


@pytest.fixture(scope="module")
def shim(pair: Pair) -> Iterator[RedshiftShim]:
    with RedshiftShim(pair.source) as s:
        yield s


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
        s = RedshiftSource(shim.url(), f"select * from {src}", None, fetch_size=250, batch_size=500)
        await s.open()
        sizes = []
        try:
            async for batch in s.batches():
                assert isinstance(batch, list)
                sizes.append(len(batch))
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
    assert (second.rows_read, second.inserted) == (1, 1)
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
