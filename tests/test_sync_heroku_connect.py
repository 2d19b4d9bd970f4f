"""Heroku Connect targets (spec §9): upserts on the unique External ID, system columns never
written, only real changes reach the trigger log, failures and backlog reported."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sync.errors import TargetError
from tests.conftest import Databases
from tests.test_sync_support import Pair, q, unique, x

# A hand-built stand-in for a Heroku Connect mapped table: the same system columns, a unique
# External ID, and a trigger that logs every write the way Heroku Connect's does.
HC_SETUP = """
CREATE SCHEMA salesforce;
CREATE TABLE salesforce._trigger_log (
    id bigserial PRIMARY KEY, txid bigint, created_at timestamptz DEFAULT now(),
    state varchar(8) DEFAULT 'NEW', action varchar(7), table_name varchar(128),
    record_id integer, sfid varchar(18), old jsonb, "values" jsonb
);
CREATE FUNCTION salesforce.log_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO salesforce._trigger_log (txid, action, table_name, record_id, old, "values")
    VALUES (txid_current(), TG_OP, TG_TABLE_NAME,
            CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END,
            CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,
            CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END);
    RETURN NULL;
END $$;
"""


def hc_table(url: str, name: str, unique_external_id: bool = True) -> str:
    table = f"salesforce.{name}__c"
    uniq = "UNIQUE" if unique_external_id else ""
    x(
        url,
        f"""
        CREATE TABLE {table} (
            id serial PRIMARY KEY, sfid varchar(18), systemmodstamp timestamp,
            createddate timestamp, isdeleted boolean, _hc_lastop varchar(32), _hc_err text,
            catid__c double precision {uniq}, catgroup__c varchar(10), name varchar(80)
        );
        CREATE INDEX ON {table} (systemmodstamp);
        CREATE TRIGGER log_writes AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION salesforce.log_write();
        """,
    )
    return table


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create(HC_SETUP))


def source(pair: Pair, rows: int = 30) -> str:
    name = unique("category")
    x(
        pair.source,
        f"CREATE TABLE {name} (catid smallint PRIMARY KEY, catgroup varchar(10), catname text);"
        f" INSERT INTO {name} SELECT g, 'grp' || g % 3, 'name ' || g"
        f" FROM generate_series(1, {rows}) g",
    )
    return name


def job_for(pair: Pair, src: str, table: str, **kw: object) -> object:
    fields: dict[str, object] = {
        "name": src,
        "query": f"select catid, catgroup, catname from {src}",
        "target": table,
        "key": ["catid"],
        "columns": {"catname": "name"},
        "heroku_connect": {"external_id": "catid__c"},
    }
    fields.update(kw)
    return pair.job(**fields)


def log_count(pair: Pair, table: str) -> int:
    name = table.split(".")[1]
    return q(
        pair.target, "SELECT count(*) FROM salesforce._trigger_log WHERE table_name = $1", name
    )[0][0]


def test_upserts_on_the_external_id_and_never_writes_system_columns(pair: Pair) -> None:
    src = source(pair)
    table = hc_table(pair.target, src)
    job = job_for(pair, src, table)
    first = pair.sync(job)  # type: ignore[arg-type]
    assert first.inserted == 30
    # What Heroku Connect does after pushing to Salesforce: fill its own columns.
    x(
        pair.target,
        f"UPDATE {table} SET sfid = 'a0' || id, _hc_lastop = 'SYNCED', isdeleted = false,"
        " systemmodstamp = '2024-01-01', createddate = '2024-01-01'",
    )
    system_before = q(
        pair.target,
        f"SELECT catid__c, id, sfid, systemmodstamp, createddate, isdeleted, _hc_lastop, _hc_err"
        f" FROM {table} ORDER BY catid__c",
    )
    log_before = log_count(pair, table)
    x(pair.source, f"UPDATE {src} SET catname = 'renamed' WHERE catid IN (4, 5)")
    second = pair.sync(job)  # type: ignore[arg-type]
    assert (second.inserted, second.updated) == (0, 2)
    # Exactly the two changed rows reached the trigger log, as updates.
    rows = q(
        pair.target,
        "SELECT action, (\"values\"->>'catid__c')::float FROM salesforce._trigger_log"
        " WHERE table_name = $1 AND id > $2 ORDER BY 2",
        table.split(".")[1],
        # ids are serial: everything logged after the first run's rows
        q(pair.target, "SELECT max(id) FROM salesforce._trigger_log")[0][0] - 2,
    )
    assert [tuple(r) for r in rows] == [("UPDATE", 4.0), ("UPDATE", 5.0)]
    assert log_count(pair, table) == log_before + 2
    system_after = q(
        pair.target,
        f"SELECT catid__c, id, sfid, systemmodstamp, createddate, isdeleted, _hc_lastop, _hc_err"
        f" FROM {table} ORDER BY catid__c",
    )
    assert [tuple(r) for r in system_after] == [tuple(r) for r in system_before]
    assert q(pair.target, f"SELECT name FROM {table} WHERE catid__c = 4")[0][0] == "renamed"
    # An unchanged rerun logs nothing for Heroku Connect to replay.
    pair.sync(job)  # type: ignore[arg-type]
    assert log_count(pair, table) == log_before + 2


def test_a_non_unique_external_id_is_refused_with_the_fix(pair: Pair) -> None:
    src = source(pair, 3)
    table = hc_table(pair.target, src, unique_external_id=False)
    with pytest.raises(TargetError) as err:
        pair.sync(job_for(pair, src, table))  # type: ignore[arg-type]
    assert "not unique" in str(err.value) and "External ID" in str(err.value)
    assert q(pair.target, f"SELECT count(*) FROM {table}")[0][0] == 0


def test_mapping_a_source_column_onto_a_system_column_is_refused(pair: Pair) -> None:
    src = source(pair, 3)
    table = hc_table(pair.target, src)
    job = job_for(pair, src, table, query=f"select catid, catgroup, catname as sfid from {src}")
    with pytest.raises(TargetError) as err:
        pair.sync(job)  # type: ignore[arg-type]
    assert "sfid" in str(err.value) and "never writes" in str(err.value)


def test_failed_rows_and_trigger_log_backlog_are_reported(pair: Pair) -> None:
    src = source(pair, 5)
    table = hc_table(pair.target, src)
    job = job_for(pair, src, table)
    pair.sync(job)  # type: ignore[arg-type]
    x(
        pair.target,
        f"UPDATE {table} SET _hc_lastop = 'FAILED', _hc_err = 'REQUIRED_FIELD_MISSING'"
        " WHERE catid__c = 2",
    )
    result = pair.sync(job)  # type: ignore[arg-type]
    assert result.heroku_connect["failed"] == 1
    assert "REQUIRED_FIELD_MISSING" in result.heroku_connect["failed_example"]
    # 5 inserts + the manual update above, all still 'NEW' for Heroku Connect.
    assert result.heroku_connect["trigger_log_backlog"] == 6


def test_heroku_connect_target_must_exist(pair: Pair) -> None:
    src = source(pair, 3)
    job = job_for(pair, src, f"salesforce.{src}_missing__c")
    with pytest.raises(TargetError) as err:
        pair.sync(job)  # type: ignore[arg-type]
    assert "does not exist" in str(err.value)
