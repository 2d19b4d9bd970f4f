"""The sync engine from a PostgreSQL source into PostgreSQL targets: only changed rows are
written, deletes follow the policy, guards and checks fail runs before anything is written."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import asyncpg
import pytest

from odata.model import EntitySet, EntityType
from odata.versions import VersionTracker
from sync.errors import SourceError, TargetError, TooManyDeletes, ValueDoesNotFit
from sync.progress import Reporter
from tests.conftest import Databases
from tests.test_sync_support import Pair, changed, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


def make_source(pair: Pair, rows: int = 1000) -> str:
    name = unique("items")
    x(
        pair.source,
        f"CREATE TABLE {name} (id int PRIMARY KEY, label varchar(40), price numeric(12,2),"
        " updated_at timestamp NOT NULL DEFAULT '2024-01-01');"
        f" INSERT INTO {name} SELECT g, 'item ' || g, g * 1.5, '2024-01-01'::timestamp"
        f" + g * interval '1 second' FROM generate_series(1, {rows}) g",
    )
    return name


def basic_job(pair: Pair, src: str, **kw: object) -> tuple[str, object]:
    target = f"public.{src}_t"
    fields: dict[str, object] = {
        "name": src,
        "query": f"select id, label, price from {src}",
        "target": target,
        "key": ["id"],
    }
    fields.update(kw)
    return target, pair.job(**fields)


def test_first_load_creates_the_target_with_every_row_and_a_primary_key(pair: Pair) -> None:
    src = make_source(pair, 500)
    target, job = basic_job(pair, src)
    result = pair.sync(job)
    assert (result.inserted, result.updated, result.deleted) == (500, 0, 0)
    rows = q(pair.target, f"SELECT id, label, price FROM {target} ORDER BY id")
    expected = q(pair.source, f"SELECT id, label, price FROM {src} ORDER BY id")
    assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
    pk = q(
        pair.target,
        "SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass AND indisprimary",
        target,
    )
    assert pk[0][0] == 1
    runs = q(pair.target, "SELECT status, rows_inserted FROM r2sf.sync_runs WHERE job = $1", src)
    assert [tuple(r) for r in runs] == [("ok", 500)]


def test_unchanged_rerun_writes_zero_rows(pair: Pair) -> None:
    src = make_source(pair, 2000)
    target, job = basic_job(pair, src)
    pair.sync(job)
    before_stat = pair.writes(target)
    before = pair.versions(target)
    result = pair.sync(job)
    assert (result.inserted, result.updated, result.deleted, result.unchanged) == (0, 0, 0, 2000)
    assert changed(before, pair.versions(target)) == set()
    assert pair.writes(target) == before_stat


def test_one_percent_change_writes_exactly_those_rows(pair: Pair) -> None:
    src = make_source(pair, 3000)
    target, job = basic_job(pair, src)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET label = label || ' v2' WHERE id % 100 = 7")
    x(pair.source, f"UPDATE {src} SET price = NULL WHERE id IN (8, 9)")  # NULL is a change too
    want = {i for i in range(1, 3001) if i % 100 == 7} | {8, 9}
    ins0, upd0, del0 = pair.writes(target)
    before = pair.versions(target)
    result = pair.sync(job)
    assert result.updated == len(want)
    assert changed(before, pair.versions(target)) == want
    ins1, upd1, del1 = pair.writes(target)
    assert (ins1 - ins0, upd1 - upd0, del1 - del0) == (0, len(want), 0)
    assert q(pair.target, f"SELECT price FROM {target} WHERE id = 8")[0][0] is None


def test_hard_deletes_remove_rows_missing_from_a_full_run(pair: Pair) -> None:
    src = make_source(pair, 100)
    target, job = basic_job(pair, src, deletes="hard", max_deletes=5)
    pair.sync(job)
    x(pair.source, f"DELETE FROM {src} WHERE id IN (3, 4)")
    result = pair.sync(job)
    assert result.deleted == 2
    ids = {r[0] for r in q(pair.target, f"SELECT id FROM {target}")}
    assert ids == set(range(1, 101)) - {3, 4}


def test_soft_deletes_flag_missing_rows_and_unflag_rows_that_return(pair: Pair) -> None:
    src = make_source(pair, 50)
    target, job = basic_job(
        pair, src, deletes="soft", soft_delete_column="is_deleted", max_deletes="10%"
    )
    pair.sync(job)
    x(pair.source, f"DELETE FROM {src} WHERE id = 5")
    result = pair.sync(job)
    assert (result.deleted, result.updated) == (1, 0)
    flags = dict(tuple(r) for r in q(pair.target, f"SELECT id, is_deleted FROM {target}"))
    assert len(flags) == 50 and flags[5] is True and not any(v for k, v in flags.items() if k != 5)
    # A second run does not flag it again.
    before = pair.versions(target)
    assert pair.sync(job).deleted == 0
    assert changed(before, pair.versions(target)) == set()
    x(pair.source, f"INSERT INTO {src} (id, label, price) VALUES (5, 'item 5', 7.5)")
    result = pair.sync(job)
    assert result.updated == 1
    assert q(pair.target, f"SELECT is_deleted FROM {target} WHERE id = 5")[0][0] is False


def test_ignore_deletes_keeps_rows_missing_from_the_source(pair: Pair) -> None:
    src = make_source(pair, 20)
    target, job = basic_job(pair, src, deletes="ignore")
    pair.sync(job)
    x(pair.source, f"DELETE FROM {src} WHERE id > 10")
    assert pair.sync(job).deleted == 0
    assert q(pair.target, f"SELECT count(*) FROM {target}")[0][0] == 20


def test_mass_delete_guard_fails_the_run_and_writes_nothing(pair: Pair) -> None:
    src = make_source(pair, 200)
    target, job = basic_job(pair, src, deletes="hard", max_deletes="10%")
    pair.sync(job)
    x(pair.source, f"DELETE FROM {src} WHERE id > 150")  # 25% gone
    x(pair.source, f"UPDATE {src} SET label = 'changed' WHERE id = 1")
    before = pair.versions(target)
    with pytest.raises(TooManyDeletes) as err:
        pair.sync(job)
    assert "50 of 200" in str(err.value) and "10%" in str(err.value)
    assert changed(before, pair.versions(target)) == set()
    runs = q(
        pair.target,
        "SELECT status, error FROM r2sf.sync_runs WHERE job = $1 ORDER BY id DESC LIMIT 1",
        src,
    )
    assert runs[0][0] == "failed" and "max_deletes" in runs[0][1]


def test_dry_run_reports_counts_and_sample_keys_and_writes_nothing(pair: Pair) -> None:
    src = make_source(pair, 100)
    target, job = basic_job(pair, src, deletes="hard", max_deletes=10)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET label = 'new' WHERE id IN (10, 20, 30)")
    x(pair.source, f"DELETE FROM {src} WHERE id IN (99, 100)")
    x(pair.source, f"INSERT INTO {src} (id, label) VALUES (101, 'a'), (102, 'b')")
    before = pair.versions(target)
    runs_before = q(pair.target, "SELECT count(*) FROM r2sf.sync_runs")[0][0]
    result = pair.sync(job, dry_run=True)
    assert (result.inserted, result.updated, result.deleted, result.unchanged) == (2, 3, 2, 95)
    assert sorted(result.samples["update"]) == ["id=10", "id=20", "id=30"]
    assert sorted(result.samples["insert"]) == ["id=101", "id=102"]
    assert sorted(result.samples["delete"]) == ["id=100", "id=99"]
    assert changed(before, pair.versions(target)) == set()
    assert q(pair.target, "SELECT count(*) FROM r2sf.sync_runs")[0][0] == runs_before


def test_dry_run_of_a_new_target_does_not_create_it(pair: Pair) -> None:
    src = make_source(pair, 10)
    target, job = basic_job(pair, src)
    result = pair.sync(job, dry_run=True)
    assert result.inserted == 10
    assert q(pair.target, "SELECT to_regclass($1)", target)[0][0] is None


def test_incremental_run_reads_only_rows_above_the_watermark(pair: Pair) -> None:
    src = make_source(pair, 100)
    target, job = basic_job(
        pair,
        src,
        query=f"select id, label, updated_at from {src}",
        incremental={"column": "updated_at"},
        deletes="hard",
        max_deletes="100%",
    )
    first = pair.sync(job)
    assert first.rows_read == 100 and first.watermark == "2024-01-01 00:01:40"
    x(pair.source, f"UPDATE {src} SET label = 'late', updated_at = '2024-02-01' WHERE id = 7")
    x(pair.source, f"DELETE FROM {src} WHERE id = 8")  # not seen by an incremental run
    x(pair.source, f"UPDATE {src} SET label = 'stale' WHERE id = 9")  # not newer: not read
    second = pair.sync(job)
    # Read: id 7 and id 100, at the old watermark itself (re-read, unchanged).
    assert (second.rows_read, second.updated, second.unchanged, second.deleted) == (2, 1, 1, 0)
    assert second.watermark == "2024-02-01 00:00:00"
    labels = dict(tuple(r) for r in q(pair.target, f"SELECT id, label FROM {target}"))
    assert labels[7] == "late" and labels[9] == "item 9" and 8 in labels
    third = pair.sync(job)
    assert (third.rows_read, third.written) == (1, 0)
    assert third.watermark == "2024-02-01 00:00:00"
    full = pair.sync(job, full_refresh=True)
    assert (full.rows_read, full.updated, full.deleted) == (99, 1, 1)


def test_value_too_long_fails_naming_job_key_column_value_and_limit(pair: Pair) -> None:
    src = make_source(pair, 20)
    target = f"public.{src}_narrow"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, label varchar(6), price numeric)")
    _, job = basic_job(pair, src, target=target)
    with pytest.raises(ValueDoesNotFit) as err:
        pair.sync(job)
    msg = str(err.value)
    # 'item 10'..'item 20' have 7 characters; 'item 1'..'item 9' (6) fit.
    for part in (src, "id=10", "label", "'item 10'", "6 characters", "11 rows"):
        assert part in msg, msg
    assert q(pair.target, f"SELECT count(*) FROM {target}")[0][0] == 0


def test_numbers_out_of_range_fail_before_anything_is_written(pair: Pair) -> None:
    src = unique("nums")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int PRIMARY KEY, qty bigint, amount numeric);"
        f" INSERT INTO {src} VALUES (1, 5, 1.25), (2, 3000000000, 2.5), (3, 1, 123456.789)",
    )
    target = f"public.{src}_t"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, qty int, amount numeric(6,2))")
    job = pair.job(name=src, table=f"public.{src}", target=target, key=["id"])
    with pytest.raises(ValueDoesNotFit) as err:
        pair.sync(job)
    assert "id=2" in str(err.value) and "3000000000" in str(err.value)
    x(pair.source, f"UPDATE {src} SET qty = 2 WHERE id = 2")
    with pytest.raises(ValueDoesNotFit) as err:
        pair.sync(job)
    assert "id=3" in str(err.value) and "amount" in str(err.value)
    assert "4 digits before the decimal point" in str(err.value)
    assert q(pair.target, f"SELECT count(*) FROM {target}")[0][0] == 0


def test_text_that_is_not_a_number_fails_the_run(pair: Pair) -> None:
    src = unique("texts")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int PRIMARY KEY, qty text);"
        f" INSERT INTO {src} VALUES (1, '12'), (2, 'twelve')",
    )
    target = f"public.{src}_t"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, qty int)")
    job = pair.job(name=src, table=f"public.{src}", target=target, key=["id"])
    with pytest.raises(ValueDoesNotFit) as err:
        pair.sync(job)
    assert "id=2" in str(err.value) and "'twelve'" in str(err.value)
    x(pair.source, f"UPDATE {src} SET qty = '13' WHERE id = 2")
    pair.sync(job)
    assert sorted(tuple(r) for r in q(pair.target, f"SELECT * FROM {target}")) == [(1, 12), (2, 13)]


def test_on_error_skip_writes_the_rest_and_reports_skipped_rows(pair: Pair) -> None:
    src = make_source(pair, 20)
    target = f"public.{src}_skip"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, label varchar(6), price numeric)")
    x(pair.target, f"INSERT INTO {target} VALUES (15, 'old', 1)")
    _, job = basic_job(pair, src, target=target, deletes="hard", max_deletes="100%")
    result = pair.sync(job, on_error="skip")
    assert result.skipped == 11  # ids 10..20 have 7-character labels
    assert result.inserted == 9
    assert result.skipped_reasons and "6 characters" in result.skipped_reasons[0]
    ids = {r[0] for r in q(pair.target, f"SELECT id FROM {target}")}
    # A skipped row is not "missing from the source": id 15 is kept, not deleted.
    assert ids == set(range(1, 10)) | {15}


def test_duplicate_source_keys_fail_the_run(pair: Pair) -> None:
    src = make_source(pair, 5)
    target, job = basic_job(pair, src, query=f"select id % 2 as id, label from {src}")
    with pytest.raises(SourceError) as err:
        pair.sync(job)
    assert "the key must be unique" in str(err.value) and "(id)=(1)" in str(err.value)
    assert q(pair.target, "SELECT to_regclass($1)", target)[0][0] is None


def test_source_columns_without_a_target_column_are_refused_with_the_fix(pair: Pair) -> None:
    src = make_source(pair, 5)
    target = f"public.{src}_few"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, label text)")
    _, job = basic_job(pair, src, target=target)
    with pytest.raises(TargetError) as err:
        pair.sync(job)
    assert "price" in str(err.value) and "columns = {src" in str(err.value)


def test_renamed_columns_land_in_the_mapped_target_columns(pair: Pair) -> None:
    src = make_source(pair, 5)
    target, job = basic_job(pair, src, columns={"label": "name", "id": "item_id"})
    pair.sync(job)
    cols = [r[0] for r in q(pair.target, f"SELECT * FROM {target} ORDER BY item_id")[:1]]
    assert q(pair.target, f"SELECT name FROM {target} WHERE item_id = 3")[0][0] == "item 3"
    assert cols == [1]


def test_a_target_without_a_unique_key_is_refused(pair: Pair) -> None:
    src = make_source(pair, 5)
    target = f"public.{src}_nokey"
    x(pair.target, f"CREATE TABLE {target} (id int, label text, price numeric)")
    _, job = basic_job(pair, src, target=target)
    with pytest.raises(TargetError) as err:
        pair.sync(job)
    assert "CREATE UNIQUE INDEX" in str(err.value)


def test_data_version_triggers_bump_when_a_sync_writes_and_not_on_an_unchanged_rerun(
    pair: Pair,
) -> None:
    src = make_source(pair, 50)
    target, job = basic_job(pair, src)
    pair.sync(job)
    schema, table = target.split(".")
    entity_set = EntitySet(src, schema, table, EntityType(src, (), ()))

    async def install() -> None:
        tracker = VersionTracker(pair.target)
        await tracker.start([entity_set])
        await tracker.close()

    asyncio.run(install())

    def version() -> int | None:
        rows = q(pair.target, "SELECT version FROM r2sf.data_versions WHERE relid = $1::regclass",
                 target)  # fmt: skip
        return rows[0][0] if rows else None

    v0 = version()
    assert pair.sync(job).unchanged == 50
    assert version() == v0
    x(pair.source, f"UPDATE {src} SET label = 'new' WHERE id = 5")
    assert pair.sync(job).updated == 1
    v1 = version()
    assert v1 is not None and v1 != v0
    assert pair.sync(job).written == 0
    assert version() == v1


def test_readers_see_the_old_rows_or_the_new_rows_never_a_mix(pair: Pair) -> None:
    src = make_source(pair, 20000)
    target, job = basic_job(pair, src)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET label = 'v2'")

    async def watch() -> list[int]:
        seen: list[int] = []
        conn = await asyncpg.connect(pair.target)
        task = asyncio.create_task(asyncio.to_thread(pair.sync, job))
        while not task.done():
            seen.append(await conn.fetchval(f"SELECT count(*) FROM {target} WHERE label = 'v2'"))
        await task
        seen.append(await conn.fetchval(f"SELECT count(*) FROM {target} WHERE label = 'v2'"))
        await conn.close()
        return seen

    seen = asyncio.run(watch())
    # Old rows until the commit, then all the new ones: never a part, never back.
    assert set(seen) <= {0, 20000} and seen[-1] == 20000, seen
    assert seen == sorted(seen), seen


def test_first_load_copies_straight_into_the_new_target_and_reruns_stage(pair: Pair) -> None:
    src = make_source(pair, 300)
    _, job = basic_job(pair, src)
    out = io.StringIO()
    first = pair.sync(job, reporter=Reporter(stream=out, tty=False))
    assert first.inserted == 300
    assert "event=loaded" in out.getvalue() and "event=staged" not in out.getvalue()
    out = io.StringIO()
    assert pair.sync(job, reporter=Reporter(stream=out, tty=False)).unchanged == 300
    assert "event=staged" in out.getvalue()


def test_rerun_runs_only_the_statements_that_have_rows_to_write(pair: Pair) -> None:
    src = make_source(pair, 400)
    target, job = basic_job(pair, src, deletes="hard", max_deletes="10%")
    pair.sync(job)
    # Statement-level triggers fire even for statements that touch no row.
    x(
        pair.target,
        f"CREATE TABLE {src}_log (op text);"
        f" CREATE FUNCTION {src}_note() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN INSERT INTO {src}_log VALUES (TG_OP); RETURN NULL; END $$;"
        f" CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON {target}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {src}_note()",
    )
    assert pair.sync(job).unchanged == 400
    assert q(pair.target, f"SELECT op FROM {src}_log") == []
    x(pair.source, f"UPDATE {src} SET label = 'x' WHERE id = 3")
    assert pair.sync(job).updated == 1
    assert [r[0] for r in q(pair.target, f"SELECT op FROM {src}_log")] == ["UPDATE"]


def _declared(url: str, table: str) -> dict[str, tuple[str, bool]]:
    rows = q(
        url,
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table,
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def test_created_target_keeps_the_source_types_lengths_and_not_null(pair: Pair) -> None:
    src = unique("typed")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int NOT NULL, amount numeric(8,2) NOT NULL, code varchar(10),"
        " flag char(3), at timestamp(3), plain numeric, UNIQUE (id));"
        f" INSERT INTO {src} VALUES (1, 12.5, 'abc', 'x', '2024-01-01 00:00:00.123', 7)",
    )
    table_job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}_t", key=["id"])
    pair.sync(table_job)
    assert _declared(pair.target, f"public.{src}_t") == _declared(pair.source, src)
    # A query job: the same types; NOT NULL only on the key (a query does not declare it).
    query_job = pair.job(name=src + "_q", query=f"select id, amount, code from {src}",
                         target=f"public.{src}_q", key=["id"])  # fmt: skip
    pair.sync(query_job)
    assert _declared(pair.target, f"public.{src}_q") == {
        "id": ("integer", True),
        "amount": ("numeric(8,2)", False),
        "code": ("character varying(10)", False),
    }


def test_incremental_run_reads_rows_committed_late_with_the_watermark_value(pair: Pair) -> None:
    src = make_source(pair, 10)
    target, job = basic_job(pair, src, query=f"select id, label, updated_at from {src}",
                            incremental={"column": "updated_at"})  # fmt: skip
    x(pair.source, f"UPDATE {src} SET updated_at = '2024-03-01' WHERE id = 10")
    assert pair.sync(job).watermark == "2024-03-01 00:00:00"
    # Committed after that run, with the same updated_at as the watermark.
    x(pair.source, f"INSERT INTO {src} VALUES (11, 'late', NULL, '2024-03-01')")
    before = pair.versions(target)
    result = pair.sync(job)
    assert (result.inserted, result.updated) == (1, 0)
    assert changed(before, pair.versions(target)) == {11}


def test_skipped_rows_hold_the_watermark_until_they_fit(pair: Pair) -> None:
    src = make_source(pair, 10)
    target = f"public.{src}_w"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, label varchar(7),"
                   " updated_at timestamp)")  # fmt: skip
    _, job = basic_job(pair, src, query=f"select id, label, updated_at from {src}",
                       target=target, incremental={"column": "updated_at"})  # fmt: skip
    x(pair.source, f"UPDATE {src} SET label = 'much too long' WHERE id = 4")
    first = pair.sync(job, on_error="skip")
    assert (first.skipped, first.inserted) == (1, 9)
    assert first.watermark == "2024-01-01 00:00:04"  # id 4's, not id 10's
    x(pair.source, f"UPDATE {src} SET label = 'fixed' WHERE id = 4")
    second = pair.sync(job, on_error="skip")
    assert (second.skipped, second.inserted, second.updated) == (0, 1, 0)
    assert second.watermark == "2024-01-01 00:00:10"
    assert q(pair.target, f"SELECT label FROM {target} WHERE id = 4")[0][0] == "fixed"


def test_a_rerun_takes_no_lock_that_makes_other_writers_wait(pair: Pair) -> None:
    src = make_source(pair, 20)
    target, job = basic_job(pair, src)
    pair.sync(job)
    # The merge's own UPDATE records the locks its transaction holds on the target.
    x(
        pair.target,
        f"CREATE TABLE {src}_locks (mode text);"
        f" CREATE FUNCTION {src}_locks() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN INSERT INTO {src}_locks SELECT mode FROM pg_locks"
        "  WHERE relation = TG_RELID AND pid = pg_backend_pid(); RETURN NULL; END $$;"
        f" CREATE TRIGGER locks AFTER UPDATE ON {target}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {src}_locks()",
    )
    x(pair.source, f"UPDATE {src} SET label = 'x' WHERE id = 1")
    assert pair.sync(job).updated == 1
    modes = {r[0] for r in q(pair.target, f"SELECT mode FROM {src}_locks")}
    assert "RowExclusiveLock" in modes
    assert modes <= {"AccessShareLock", "RowExclusiveLock"}, modes
