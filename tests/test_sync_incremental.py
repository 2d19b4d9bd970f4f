"""Incremental jobs over time: a lookback window re-reads rows that commit late with older
watermark values; rows whose watermark column is NULL are read only by full runs; a
full_refresh schedule makes the first run after each of its times read everything and apply
deletes an incremental run cannot see. Through both source paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.config import ConfigError
from sync.config import load_jobs, parse_sync_file
from sync.errors import SourceError
from tests.conftest import Databases
from tests.redshift_shim import RedshiftShim
from tests.test_sync_support import Pair, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


@pytest.fixture(scope="module", params=["postgresql", "redshift"])
def source_url(pair: Pair, request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgresql":
        yield pair.source
        return
    with RedshiftShim(pair.source, protocol="binary") as shim:
        yield shim.url()


def events(pair: Pair) -> str:
    name = unique("events")
    x(pair.source, f"CREATE TABLE {name} (id int PRIMARY KEY, label text, updated_at timestamp);"
                   f" INSERT INTO {name} SELECT g, 'e' || g, '2024-01-01'::timestamp"
                   f" + g * interval '1 hour' FROM generate_series(1, 48) g")  # fmt: skip
    return name


def test_lookback_rereads_rows_that_committed_late_with_older_values(
    pair: Pair, source_url: str
) -> None:
    src = events(pair)
    plain = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"],
                     incremental={"column": "updated_at"})  # fmt: skip
    back = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"],
                    incremental={"column": "updated_at", "lookback": "3 hours"})  # fmt: skip
    assert pair.sync(plain, source_url=source_url).rows_read == 48
    # A row that committed after that run, stamped 2 hours before the watermark (Jan 3 00:00).
    x(pair.source, f"INSERT INTO {src} VALUES (100, 'late', '2024-01-02 22:00')")
    assert pair.sync(plain, source_url=source_url).inserted == 0  # missed without lookback
    result = pair.sync(back, source_url=source_url)
    assert (result.rows_read, result.inserted) == (5, 1)  # 21:00 to 00:00, and the late row
    assert result.watermark == "2024-01-03 00:00:00"
    assert q(pair.target, f"SELECT label FROM {src} WHERE id = 100")[0][0] == "late"


def test_rows_with_a_null_watermark_are_read_only_by_full_runs(pair: Pair, source_url: str) -> None:
    src = events(pair)
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"],
                   incremental={"column": "updated_at"})  # fmt: skip
    x(pair.source, f"INSERT INTO {src} VALUES (0, 'undated', NULL)")
    assert pair.sync(job, source_url=source_url).inserted == 49  # the first run reads all
    x(pair.source, f"INSERT INTO {src} VALUES (-1, 'undated too', NULL)")
    assert pair.sync(job, source_url=source_url).inserted == 0
    assert pair.sync(job, source_url=source_url, full_refresh=True).inserted == 1


def test_a_full_refresh_schedule_applies_deletes_an_incremental_run_cannot_see(
    pair: Pair, source_url: str
) -> None:
    src = events(pair)
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"],
                   incremental={"column": "updated_at"}, deletes="hard",
                   full_refresh="0 3 * * 0")  # fmt: skip
    pair.sync(job, source_url=source_url)
    x(pair.source, f"DELETE FROM {src} WHERE id IN (5, 6)")
    quiet = pair.sync(job, source_url=source_url)
    assert (quiet.full_refresh, quiet.deleted) == (False, 0)  # the last full run was today
    # As if the last full run was before last Sunday 03:00.
    x(pair.target, "UPDATE r2sf.sync_runs SET started_at = started_at - interval '8 days'"
                   " WHERE job = $1", src)  # fmt: skip
    full = pair.sync(job, source_url=source_url)
    assert (full.rows_read, full.deleted) == (46, 2)
    assert q(pair.target, f"SELECT count(*) FROM {src}")[0][0] == 46
    # That run counts as the full one: the next is incremental again.
    assert pair.sync(job, source_url=source_url).rows_read == 1


def test_a_lookback_of_the_wrong_kind_names_the_fix(pair: Pair, source_url: str) -> None:
    src = events(pair)
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"],
                   incremental={"column": "updated_at", "lookback": 100})  # fmt: skip
    pair.sync(job, source_url=source_url)  # the first run reads everything
    with pytest.raises(SourceError, match='write a duration such as "100 hours"'):
        pair.sync(job, source_url=source_url)


@pytest.mark.parametrize(
    ("lookback", "message"),
    [("2 fortnights", "is not a duration"), (-5, "positive number"), (True, "positive number")],
)
def test_lookback_is_validated_in_the_config(lookback: object, message: str) -> None:
    raw = {"jobs": [{"name": "j", "query": "select 1 as id", "target": "public.j", "key": ["id"],
                     "incremental": {"column": "id", "lookback": lookback}}]}  # fmt: skip
    with pytest.raises(ConfigError, match=message) as err:
        load_jobs(parse_sync_file({"sync": raw}))
    assert "sync.jobs[0].incremental.lookback" in str(err.value)
