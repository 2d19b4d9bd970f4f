"""Heroku Connect targets: the job touches only rows it owns, compares values as Salesforce stores
them, writes only changed columns, stays within its change budget and reports Connect's backlog.

Every test runs against the Heroku Connect stand-in in tests/heroku_connect.py (mapped tables,
trigger log, write-back), built from Heroku's documentation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync.config import HC_MAX_CHANGES, Job
from sync.errors import TargetError, TooManyChanges, TooManyDeletes
from tests import heroku_connect as hcx
from tests.conftest import Databases
from tests.test_sync_support import Pair, q, unique, x

FIELDS = (*hcx.DEFAULT_FIELDS, ("gone__c", "boolean"))


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create(hcx.SCHEMA_SQL))


def warehouse(pair: Pair, rows: int = 5) -> str:
    """A warehouse table `ext` k1..kN whose columns map onto the mapped table's fields."""
    name = unique("summary")
    x(
        pair.source,
        f"CREATE TABLE {name} (ext text PRIMARY KEY, name text, amount numeric(12, 3),"
        " active boolean, closed timestamp, note text, region text);"
        f" INSERT INTO {name} SELECT 'k' || g, 'Account ' || g, g * 10.125, g % 2 = 0,"
        " timestamp '2024-03-01 10:00:00.123456' + g * interval '1 day', 'note ' || g, 'West'"
        f" FROM generate_series(1, {rows}) g",
    )
    return name


def mapped(pair: Pair, **kw: Any) -> str:
    table = unique("summary") + "__c"
    x(pair.target, hcx.mapped_table_sql(table, kw.pop("fields", FIELDS), **kw))
    return table


def job(pair: Pair, src: str, table: str, **kw: Any) -> Job:
    hc: dict[str, Any] = {"external_id": "external_id__c", "scale": {"amount__c": 2}}
    hc.update(kw.pop("hc", {}))
    fields: dict[str, Any] = {
        "name": src,
        "query": f"select ext, name, amount, active, closed, note, region from {src}",
        "target": f"salesforce.{table}",
        "key": ["ext"],
        "heroku_connect": hc,
    }
    fields.update(kw)
    return pair.job(**fields)


def rows_by_sfid(pair: Pair, table: str) -> dict[str, tuple[Any, ...]]:
    return {
        r["sfid"]: tuple(r)
        for r in q(pair.target, f"SELECT * FROM salesforce.{table} WHERE sfid IS NOT NULL")
    }


def externals(pair: Pair, table: str) -> list[Any]:
    return [
        r[0] for r in q(pair.target, f"SELECT external_id__c FROM salesforce.{table} ORDER BY 1")
    ]


# -- ownership -----------------------------------------------------------------------------


SF_CREATED = [
    {"name": "Created in Salesforce 1"},
    {"name": "Created in Salesforce 2", "note__c": "keep me"},
    {"name": "Typed by hand", "external_id__c": "typed-1"},
]


@pytest.mark.parametrize("deletes", ["hard", "soft", "ignore"])
def test_records_created_in_salesforce_survive_every_delete_policy_and_full_refresh(
    pair: Pair, deletes: str
) -> None:
    src = warehouse(pair)
    table = mapped(pair)
    extra: dict[str, Any] = {"deletes": deletes, "max_deletes": "100%"}
    if deletes == "soft":
        extra["soft_delete_column"] = "gone__c"
    j = job(pair, src, table, **extra)
    assert pair.sync(j).inserted == 5
    hcx.write_back(pair.target, table)
    hcx.create_in_salesforce(pair.target, table, SF_CREATED)
    theirs = {
        sfid: row
        for sfid, row in rows_by_sfid(pair, table).items()
        if row[8] is None or row[8] == "typed-1"  # external_id__c
    }
    assert len(theirs) == 3
    x(pair.source, f"DELETE FROM {src} WHERE ext <> 'k1'")

    dry = pair.sync(j, full_refresh=True, dry_run=True)
    expected_deletes = 0 if deletes == "ignore" else 4
    assert dry.deleted == expected_deletes
    sampled = dry.samples.get("delete", [])
    assert sorted(sampled) == (["ext=k2", "ext=k3", "ext=k4", "ext=k5"] if expected_deletes else [])
    result = pair.sync(j, full_refresh=True)
    assert (result.deleted, result.not_owned) == (expected_deletes, 0)
    # The three records the job never wrote are exactly as they were.
    after = rows_by_sfid(pair, table)
    assert {sfid: after[sfid] for sfid in theirs} == theirs
    if deletes == "hard":
        assert externals(pair, table) == ["k1", "typed-1", None, None]
    else:
        assert len(externals(pair, table)) == 8
    if deletes == "soft":
        flagged = q(pair.target, f"SELECT external_id__c FROM salesforce.{table} WHERE gone__c")
        assert sorted(r[0] for r in flagged) == ["k2", "k3", "k4", "k5"]


def test_a_table_of_salesforce_records_is_never_wiped_whatever_the_guard(pair: Pair) -> None:
    src = warehouse(pair, 0)
    table = mapped(pair)
    hcx.create_in_salesforce(pair.target, table, SF_CREATED)
    before = rows_by_sfid(pair, table)
    log_before = hcx.last_log_id(pair.target)
    j = job(pair, src, table, deletes="hard", max_deletes="100%")
    result = pair.sync(j, full_refresh=True)
    assert (result.deleted, result.target_rows) == (0, 0)
    assert rows_by_sfid(pair, table) == before
    assert hcx.log_entries(pair.target, table, log_before) == []


def test_an_external_id_typed_by_hand_is_left_alone_until_adopted(pair: Pair) -> None:
    src = warehouse(pair)
    table = mapped(pair)
    hcx.create_in_salesforce(
        pair.target, table, [{"name": "Typed by a user", "external_id__c": "k3"}]
    )
    (typed,) = [r for r in rows_by_sfid(pair, table).values() if r[8] == "k3"]
    j = job(pair, src, table, deletes="hard", max_deletes="100%")
    result = pair.sync(j)
    assert (result.inserted, result.updated, result.not_owned) == (4, 0, 1)
    assert result.samples["not_owned"] == ["ext=k3"]
    assert q(pair.target, f"SELECT name FROM salesforce.{table} WHERE external_id__c = 'k3'")[0][
        0
    ] == ("Typed by a user")
    # Gone from the warehouse: still not the job's to delete.
    x(pair.source, f"DELETE FROM {src} WHERE ext = 'k3'")
    assert pair.sync(j, full_refresh=True).deleted == 0
    assert [tuple(r) for r in rows_by_sfid(pair, table).values() if r[8] == "k3"] == [typed]
    # Back in the warehouse and adopted on request: from now on it is the job's row.
    x(pair.source, f"INSERT INTO {src} (ext, name) VALUES ('k3', 'From the warehouse')")
    adopted = pair.sync(j, adopt=True)
    assert (adopted.adopted, adopted.updated, adopted.not_owned) == (1, 1, 0)
    assert q(pair.target, f"SELECT name FROM salesforce.{table} WHERE external_id__c = 'k3'")[0][
        0
    ] == ("From the warehouse")
    x(pair.source, f"DELETE FROM {src} WHERE ext = 'k3'")
    assert pair.sync(j, full_refresh=True).deleted == 1


def test_jobs_that_ran_before_ownership_was_kept_adopt_their_rows_once(pair: Pair) -> None:
    src = warehouse(pair)
    table = mapped(pair)
    j = job(pair, src, table)
    pair.sync(j)
    # The state migration 2 leaves for a job that already ran: no owned IDs, adoption pending.
    x(pair.target, "DELETE FROM r2sf.hc_owned WHERE job = $1", j.name)
    x(pair.target, "INSERT INTO r2sf.hc_adopt_pending VALUES ($1)", j.name)
    x(pair.source, f"UPDATE {src} SET name = 'changed' WHERE ext = 'k2'")
    result = pair.sync(j)
    assert (result.adopted, result.updated, result.not_owned) == (5, 1, 0)
    assert q(pair.target, "SELECT count(*) FROM r2sf.hc_adopt_pending")[0][0] == 0
    assert pair.sync(j).adopted == 0


def test_a_job_pointed_at_another_table_owns_nothing_there(pair: Pair) -> None:
    src = warehouse(pair, 3)
    first, second = mapped(pair), mapped(pair)
    assert pair.sync(job(pair, src, first)).inserted == 3
    hcx.create_in_salesforce(
        pair.target,
        second,
        [{"name": "typed", "external_id__c": "k1"}, {"name": "typed", "external_id__c": "k9"}],
    )
    moved = job(pair, src, second, deletes="hard", max_deletes="100%")
    result = pair.sync(moved, full_refresh=True)
    assert (result.inserted, result.updated, result.deleted, result.not_owned) == (2, 0, 0, 1)
    names = q(pair.target, f"SELECT external_id__c, name FROM salesforce.{second} ORDER BY 1")
    assert [tuple(r) for r in names] == [
        ("k1", "typed"), ("k2", "Account 2"), ("k3", "Account 3"), ("k9", "typed"),
    ]  # fmt: skip


def test_a_row_whose_push_failed_is_kept_reported_and_not_rewritten(pair: Pair) -> None:
    src = warehouse(pair)
    table = mapped(pair)
    j = job(pair, src, table, deletes="hard", max_deletes="100%")
    pair.sync(j)
    hcx.write_back(pair.target, table, fail={"k2": "REQUIRED_FIELD_MISSING: Owner"})
    # A row some other process wrote into the mapped table, whose push failed too.
    x(
        pair.target,
        f"INSERT INTO salesforce.{table} (name) VALUES ('written by another app');"
        " BEGIN; SET LOCAL r2sf_test.connect = 'on';"  # Connect records the failed push
        f" UPDATE salesforce.{table} SET _hc_lastop = 'FAILED', _hc_err = 'INVALID_FIELD'"
        " WHERE external_id__c IS NULL; COMMIT",
    )
    log_before = hcx.last_log_id(pair.target)
    result = pair.sync(j, full_refresh=True)
    assert (result.written, result.deleted) == (0, 0)
    assert hcx.log_entries(pair.target, table, log_before) == []
    assert result.heroku_connect["failed"] == 2
    assert "k2: REQUIRED_FIELD_MISSING: Owner" in result.heroku_connect["failures"]
    # The failed row is the job's: a real change reaches it, and only it.
    x(pair.source, f"UPDATE {src} SET name = 'fixed' WHERE ext = 'k2'")
    assert pair.sync(j).updated == 1
    assert [e["action"] for e in hcx.log_entries(pair.target, table, log_before)] == ["UPDATE"]


# -- values as Salesforce stores them ----------------------------------------------------------


@pytest.mark.parametrize("bulk", [False, True], ids=["soap", "bulk"])
def test_a_rerun_after_write_back_writes_nothing(pair: Pair, bulk: bool) -> None:
    src = warehouse(pair, 6)
    # Values Salesforce normalises: NULL and '' text, padding, microseconds, a third decimal
    # on a Currency(16, 2) field, a NULL checkbox.
    x(
        pair.source,
        f"UPDATE {src} SET note = NULL WHERE ext = 'k1';"
        f" UPDATE {src} SET note = '' WHERE ext = 'k2';"
        f" UPDATE {src} SET note = '  padded  ', region = 'East ' WHERE ext = 'k3';"
        f" UPDATE {src} SET active = NULL, amount = 0.005 WHERE ext = 'k4';"
        f" UPDATE {src} SET closed = NULL, name = '' WHERE ext = 'k5'",
    )
    table = mapped(pair)
    j = job(pair, src, table)
    assert pair.sync(j).inserted == 6
    written = {r[8]: tuple(r) for r in q(pair.target, f"SELECT * FROM salesforce.{table}")}
    hcx.write_back(pair.target, table, salesforce=hcx.Salesforce({"amount__c": 2}, bulk=bulk))
    if not bulk:  # what the job wrote is what Salesforce keeps: the write-back changes nothing
        after = {r[8]: tuple(r) for r in q(pair.target, f"SELECT * FROM salesforce.{table}")}
        job_columns = slice(7, 14)  # name .. region__c
        assert {k: v[job_columns] for k, v in after.items()} == {
            k: v[job_columns] for k, v in written.items()
        }
    log_before = hcx.last_log_id(pair.target)
    result = pair.sync(j)
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 6)
    assert hcx.log_entries(pair.target, table, log_before) == []


def test_an_update_of_one_column_logs_only_that_column(pair: Pair) -> None:
    src = warehouse(pair)
    x(pair.source, f"UPDATE {src} SET note = NULL")
    table = mapped(pair)
    j = job(pair, src, table)
    pair.sync(j)
    # A Bulk API read leaves '' where Salesforce has no value: equal to NULL, never rewritten.
    hcx.write_back(pair.target, table, salesforce=hcx.Salesforce({"amount__c": 2}, bulk=True))
    assert q(pair.target, f"SELECT count(*) FROM salesforce.{table} WHERE note__c = ''")[0][0] == 5
    log_before = hcx.last_log_id(pair.target)
    x(pair.source, f"UPDATE {src} SET amount = 99.5 WHERE ext = 'k4'")
    assert pair.sync(j).updated == 1
    (entry,) = hcx.log_entries(pair.target, table, log_before)
    assert entry["action"] == "UPDATE"
    assert entry["values"] == '{"amount__c": 99.5}'


def test_values_are_written_as_salesforce_stores_them(pair: Pair) -> None:
    src = warehouse(pair, 1)
    x(
        pair.source,
        f"UPDATE {src} SET note = '  x  ', amount = 1.005, active = NULL,"
        " closed = '2024-01-01 00:00:00.999999'",
    )
    table = mapped(pair)
    pair.sync(job(pair, src, table))
    row = q(
        pair.target,
        f"SELECT note__c, amount__c, active__c, closed__c::text FROM salesforce.{table}",
    )[0]
    assert tuple(row) == ("x", 1.01, False, "2024-01-01 00:00:00.999")


def test_scale_must_name_a_number_column_the_job_writes(pair: Pair) -> None:
    src = warehouse(pair, 1)
    table = mapped(pair)
    with pytest.raises(TargetError) as err:
        pair.sync(job(pair, src, table, hc={"scale": {"note__c": 2}}))
    assert "heroku_connect.scale" in err.value.message and "note__c" in err.value.message


# -- bounded, visible writes -------------------------------------------------------------------


def test_the_budget_stops_a_large_first_load_with_nothing_written(pair: Pair) -> None:
    src = warehouse(pair, 25)
    table = mapped(pair)
    j = job(pair, src, table, max_changes=10)
    with pytest.raises(TooManyChanges) as err:
        pair.sync(j)
    message = err.value.message
    assert "25 rows" in message and "max_changes = 10" in message
    assert "55-65 records/s" in message and "--force" in message
    assert q(pair.target, f"SELECT count(*) FROM salesforce.{table}")[0][0] == 0
    assert hcx.log_entries(pair.target, table) == []
    assert pair.sync(j, force=True).inserted == 25
    assert len(hcx.log_entries(pair.target, table)) == 25


def test_max_changes_stops_a_plain_jobs_first_load_too(pair: Pair) -> None:
    src = warehouse(pair, 25)
    target = f"public.{unique('plain')}"
    j = pair.job(name=src, table=f"public.{src}", target=target, key=["ext"], max_changes=10)
    with pytest.raises(TooManyChanges) as err:
        pair.sync(j)
    assert "would write 25 rows" in err.value.message
    assert q(pair.target, "SELECT to_regclass($1) IS NULL", target)[0][0]  # not even created
    assert pair.sync(j, force=True).inserted == 25


def test_push_estimates_read_as_minutes_or_hours() -> None:
    from sync.heroku_connect import push_estimate

    assert push_estimate(25) == "under a minute"
    assert push_estimate(50_000) == "about 13-15 min"  # 50,000 / 65 s .. 50,000 / 55 s
    assert push_estimate(5_000_000) == "about 21.4-25.3 h"


def test_heroku_connect_jobs_have_a_change_budget_by_default() -> None:
    base = {"name": "j", "table": "public.t", "target": "salesforce.t__c", "key": ["k"]}
    hc_job = Job.model_validate({**base, "heroku_connect": {"external_id": "k__c"}})
    assert hc_job.change_budget == HC_MAX_CHANGES == 50_000
    assert Job.model_validate(base).change_budget is None
    assert Job.model_validate({**base, "max_changes": 7}).change_budget == 7


def test_the_delete_guard_counts_only_the_jobs_own_rows(pair: Pair) -> None:
    src = warehouse(pair, 10)
    table = mapped(pair)
    j = job(pair, src, table, deletes="hard")  # max_deletes 10% of the job's 10 rows: 1
    pair.sync(j)
    hcx.create_in_salesforce(pair.target, table, [{"name": f"sf {i}"} for i in range(100)])
    x(pair.source, f"DELETE FROM {src} WHERE ext IN ('k1', 'k2')")
    with pytest.raises(TooManyDeletes) as err:
        pair.sync(j)
    assert "would delete 2 of 10 rows" in err.value.message


def test_without_the_unique_identifier_the_run_says_what_to_do_in_the_dashboard(
    pair: Pair,
) -> None:
    src = warehouse(pair, 3)
    table = mapped(pair, unique_identifier=None)
    # An index made by hand is not what Heroku Connect upserts on.
    x(pair.target, f"CREATE UNIQUE INDEX ON salesforce.{table} (external_id__c)")
    with pytest.raises(TargetError) as err:
        pair.sync(job(pair, src, table))
    message = err.value.message
    assert "Unique Identifier" in message and "dashboard" in message
    assert f"hcu_idx_{table}_external_id__c" in message
    assert q(pair.target, f"SELECT count(*) FROM salesforce.{table}")[0][0] == 0


def test_system_columns_are_never_written(pair: Pair) -> None:
    src = warehouse(pair)
    table = mapped(pair)
    j = job(pair, src, table)
    pair.sync(j)
    hcx.write_back(pair.target, table)
    system = (
        f"SELECT external_id__c, id, sfid, systemmodstamp, createddate, isdeleted, _hc_lastop,"
        f" _hc_err FROM salesforce.{table} ORDER BY external_id__c"
    )
    before = [tuple(r) for r in q(pair.target, system)]
    x(pair.source, f"UPDATE {src} SET name = 'renamed' WHERE ext IN ('k4', 'k5')")
    assert pair.sync(j).updated == 2
    after = {r[0]: tuple(r) for r in q(pair.target, system)}
    for row in before:
        if row[0] in ("k4", "k5"):  # Connect's own trigger marks a changed row PENDING
            assert after[row[0]][:6] == row[:6] and after[row[0]][6] == "PENDING"
        else:
            assert after[row[0]] == row


def test_mapping_a_source_column_onto_a_system_column_is_refused(pair: Pair) -> None:
    src = warehouse(pair, 3)
    table = mapped(pair)
    j = job(pair, src, table, query=f"select ext, name, note as sfid from {src}")
    with pytest.raises(TargetError) as err:
        pair.sync(j)
    assert "sfid" in err.value.message and "never writes" in err.value.message


def test_heroku_connect_target_must_exist(pair: Pair) -> None:
    src = warehouse(pair, 3)
    with pytest.raises(TargetError) as err:
        pair.sync(job(pair, src, "missing__c"))
    assert "does not exist" in err.value.message


def test_backlog_failures_and_drain_time_are_reported(pair: Pair) -> None:
    src = warehouse(pair, 5)
    table = mapped(pair)
    j = job(pair, src, table)
    first = pair.sync(j)
    # Nothing pushed yet: five inserts wait in the trigger log.
    assert first.heroku_connect["backlog"] == 5
    assert first.heroku_connect["drain"] == "under a minute"
    hcx.write_back(pair.target, table, fail={"k2": "REQUIRED_FIELD_MISSING: Owner"})
    x(pair.source, f"UPDATE {src} SET name = 'new' WHERE ext <> 'k2'")
    second = pair.sync(j)
    assert second.updated == 4
    assert second.heroku_connect["backlog"] == 4
    assert second.heroku_connect["failed"] == 1
    assert second.heroku_connect["failures"] == ["k2: REQUIRED_FIELD_MISSING: Owner"]


def test_r2sf_sync_explains_the_budget_and_the_rows_it_leaves_alone(
    pair: Pair, tmp_path: Path
) -> None:
    from tests.test_sync_cli import r2sf

    src = warehouse(pair, 12)
    table = mapped(pair)
    hcx.create_in_salesforce(
        pair.target, table, [{"name": "Typed by a user", "external_id__c": "k7"}]
    )
    config = tmp_path / "r2sf.toml"
    config.write_text(
        f'[[sync.jobs]]\nname = "summary"\ntable = "public.{src}"\n'
        f'target = "salesforce.{table}"\nkey = ["ext"]\nmax_changes = 10\n'
        'heroku_connect = { external_id = "external_id__c", scale = { amount__c = 2 } }\n'
    )
    dry = r2sf(pair, config, "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would insert 11" in dry.stdout
    assert "not owned (left alone): 1, e.g. ext=k7" in dry.stdout
    assert "more than max_changes = 10" in dry.stdout
    refused = r2sf(pair, config, "sync")
    assert refused.returncode == 1
    assert "would write 11 rows" in refused.stderr and "--force" in refused.stderr
    assert q(pair.target, f"SELECT count(*) FROM salesforce.{table}")[0][0] == 1
    forced = r2sf(pair, config, "sync", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "left 1 row(s) alone" in forced.stderr and "--adopt summary" in forced.stderr
    assert q(pair.target, f"SELECT count(*) FROM salesforce.{table}")[0][0] == 12


def test_odata_over_a_mapped_table_keys_on_sfid_and_leaves_out_rows_not_yet_pushed(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from tests.live import serve

    src = warehouse(pair, 4)
    table = mapped(pair)
    pair.sync(job(pair, src, table))
    hcx.write_back(pair.target, table)  # k1..k4 now have an sfid
    x(pair.source, f"INSERT INTO {src} (ext, name) VALUES ('k5', 'not pushed yet')")
    pair.sync(job(pair, src, table))  # k5: PENDING, no sfid
    # Heroku Connect reloads the table: every serial id changes, the sfids stay.
    x(pair.target, f"UPDATE salesforce.{table} SET id = id + 1000")
    sfid = q(pair.target, f"SELECT sfid FROM salesforce.{table} WHERE external_id__c = 'k2'")[0][0]
    toml = f'[odata]\nexpose = ["salesforce.{table}"]\n'
    with (
        caplog.at_level("INFO", logger="r2sf.odata.catalog"),
        serve(pair.target, toml) as (base, _app),
        httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=30) as client,
    ):
        metadata = client.get("/$metadata").text
        (entity_set,) = [s["name"] for s in client.get("/").json()["value"]]
        rows = client.get(
            f"/{entity_set}", params={"$count": "true", "$select": "sfid,name"}
        ).json()
        one = client.get(f"/{entity_set}('{sfid}')", params={"$select": "name"})
    assert '<PropertyRef Name="sfid"/>' in metadata
    assert rows["@odata.count"] == 4
    assert sorted(r["name"] for r in rows["value"]) == [f"Account {i}" for i in range(1, 5)]
    assert all(r["sfid"] for r in rows["value"])
    assert one.status_code == 200 and one.json()["name"] == "Account 2"
    assert any("Heroku Connect mapped table" in r.getMessage() for r in caplog.records)
