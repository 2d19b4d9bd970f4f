"""Reruns that compare fingerprints (sync/fingerprint.py) write exactly what a full comparison
writes, from a PostgreSQL source and through the Redshift driver (the shim, both protocols):
changes that keep a value's text or its equality, deletes and inserts inside differing buckets,
writes made to the target outside the sync, soft deletes, values that do not fit, and the
fallback to reading every row. Each test also checks that the run did compare fingerprints and
staged only some rows, so a test cannot pass on the full path alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sync.config import Job
from sync.errors import ValueDoesNotFit
from sync.source import is_redshift, open_source
from tests.conftest import Databases
from tests.redshift_shim import RedshiftShim
from tests.test_sync_rerun import change_keeping_text_or_equality, tricky_tables
from tests.test_sync_support import Pair, changed, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


@pytest.fixture(scope="module", params=["postgres", "redshift-text", "redshift-binary"])
def source_url(pair: Pair, request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgres":
        yield pair.source
        return
    protocol = request.param.removeprefix("redshift-")
    with RedshiftShim(pair.source, protocol=protocol) as shim:
        yield shim.url()
    assert shim.errors == []


def _source(pair: Pair, prefix: str, columns: str, row: str, rows: int) -> str:
    """A new source table `prefix_N (columns)` holding `row` for g = 1..rows; its name."""
    src = unique(prefix)
    x(
        pair.source,
        f"CREATE TABLE {src} ({columns});"
        f" INSERT INTO {src} SELECT {row} FROM generate_series(1, {rows}) g",
    )
    return src


def _job(pair: Pair, src: str, target: str | None = None, **kw: object) -> Job:
    """A job copying every column of `src` (keyed on id unless told) that compares
    fingerprints whatever the target's size."""
    kw.setdefault("key", ["id"])
    kw.setdefault("compare", "fingerprints")
    return pair.job(name=src, query=f"select * from {src}", target=target or f"public.{src}", **kw)


def test_fingerprints_never_hide_a_change(pair: Pair, source_url: str) -> None:
    src, target = tricky_tables(pair, 8000)
    job = pair.job(
        name=src,
        query=f"select id, amount, amount as amount3, label, note, code, ratio from {src}",
        target=target,
        key=["id"],
        compare="fingerprints",
    )
    assert pair.sync(job, source_url=source_url).inserted == 8000
    again = pair.sync(job, source_url=source_url)
    assert (again.compared, again.staged, again.updated, again.unchanged) == (
        "fingerprints", 0, 0, 8000,
    )  # fmt: skip
    change_keeping_text_or_equality(pair, src)
    before = pair.versions(target)
    dry = pair.sync(job, source_url=source_url, dry_run=True)
    result = pair.sync(job, source_url=source_url)
    assert changed(before, pair.versions(target)) == {1, 2, 3, 4, 5}
    assert (result.inserted, result.updated, result.deleted) == (0, 5, 0)
    assert (dry.inserted, dry.updated, dry.deleted, dry.unchanged) == (0, 5, 0, 7995)
    for r in (dry, result):  # the buckets of the six rows, not the table
        assert r.compared == "fingerprints" and 5 <= r.staged < 2000
    rows = {r[0]: tuple(r[1:]) for r in q(pair.target, f"SELECT * FROM {target} WHERE id <= 6")}
    assert rows[1][:2] == ("1.00", 1)
    assert rows[2][2] is None and rows[3][3] is None and rows[4][4] == "a "
    assert rows[5][5] == 0.5000000000000001
    # The way back: NULL -> '', 'a ' -> 'a', NULL -> 'x'.
    x(pair.source, f"UPDATE {src} SET label = 'x', note = '', code = 'a' WHERE id IN (2, 3, 4)")
    before = pair.versions(target)
    result = pair.sync(job, source_url=source_url)
    assert changed(before, pair.versions(target)) == {2, 3, 4}
    assert (result.compared, result.updated) == ("fingerprints", 3)


def test_deletes_inserts_and_outside_writes_are_found_in_their_buckets(
    pair: Pair, source_url: str
) -> None:
    src = _source(
        pair, "fpd", "id bigint PRIMARY KEY, name text, amount numeric(10,2)", "g, 'n' || g, g / 4.0",
        6000,
    )  # fmt: skip
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="hard", max_deletes="50%")
    pair.sync(job, source_url=source_url)
    x(pair.source, f"DELETE FROM {src} WHERE id IN (10, 20, 30)")
    x(pair.source, f"INSERT INTO {src} VALUES (70001, 'new', 1), (70002, 'new', 2)")
    # Written to the target by someone else: an extra row, a changed value, a lost row.
    x(pair.target, f"INSERT INTO {target} VALUES (99001, 'stray', 0)")
    x(pair.target, f"UPDATE {target} SET name = 'edited' WHERE id = 40")
    x(pair.target, f"DELETE FROM {target} WHERE id = 50")
    before = pair.versions(target)
    result = pair.sync(job, source_url=source_url)
    assert result.compared == "fingerprints" and result.staged < 1500
    assert (result.inserted, result.updated, result.deleted) == (3, 1, 4)
    assert changed(before, pair.versions(target)) == {10, 20, 30, 40, 50, 70001, 70002, 99001}
    digest = "SELECT count(*), sum(hashtext(t::text)) FROM (SELECT * FROM {} ORDER BY id) t"
    assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))
    # Kept for the next run, whether the summary and the rows were read in one snapshot
    # (PostgreSQL's exported snapshots) or not (a Redshift cursor has none to share).
    assert pair.sync(job, source_url=source_url).target_summary == "kept"


@pytest.mark.parametrize(
    ("key_type", "key"),
    [("text", "'k' || g"), ("int", "g - 3000")],  # hash buckets; key ranges across zero
)
def test_changes_are_found_whatever_the_buckets(
    pair: Pair, source_url: str, key_type: str, key: str
) -> None:
    src = _source(pair, "fpk", f"k {key_type} PRIMARY KEY, v text", f"{key}, 'v' || g", 6000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, key=["k"], deletes="hard", max_deletes="50%")
    pair.sync(job, source_url=source_url)
    x(pair.source, f"UPDATE {src} SET v = 'changed' WHERE v IN ('v10', 'v2990', 'v3001')")
    x(pair.source, f"DELETE FROM {src} WHERE v IN ('v20', 'v2999', 'v3000')")
    x(pair.target, f"UPDATE {target} SET v = 'edited' WHERE v = 'v40'")
    before = q(pair.target, f"SELECT count(*) FROM {target}")
    result = pair.sync(job, source_url=source_url)
    assert result.compared == "fingerprints" and result.staged < 1500
    assert (result.inserted, result.updated, result.deleted) == (0, 4, 3)
    assert q(pair.target, f"SELECT count(*) FROM {target}")[0][0] == before[0][0] - 3
    digest = "SELECT count(*), sum(hashtext(t::text)) FROM {} t"
    assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))
    # What this run kept describes the target exactly (for a Redshift source the differing
    # buckets, both sides of zero, were summarised again from the target): nothing to stage.
    again = pair.sync(job, source_url=source_url)
    assert (again.target_summary, again.staged, again.written) == ("kept", 0, 0)
    # The next run compares against the summary this one kept; a PostgreSQL source then
    # summarises in two queries, even and odd buckets (a negative one's remainder is -1):
    # changes on both sides of zero and in both halves are found.
    x(pair.source, f"UPDATE {src} SET v = 'again' WHERE v IN ('v11', 'v44', 'v2995', 'v5990')")
    x(pair.source, f"DELETE FROM {src} WHERE v IN ('v77', 'v2960', 'v3040')")
    x(pair.source, f"INSERT INTO {src} VALUES ({key.replace('g', '7001')}, 'new')")
    result = pair.sync(job, source_url=source_url)
    assert (result.target_summary, result.compared) == ("kept", "fingerprints")
    assert (result.inserted, result.updated, result.deleted) == (1, 4, 3)
    assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))


def test_soft_deletes_flag_and_unflag_inside_differing_buckets(pair: Pair, source_url: str) -> None:
    src = _source(pair, "fps", "id int PRIMARY KEY, v text", "g, 'v' || g", 2000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="soft", soft_delete_column="gone")
    pair.sync(job, source_url=source_url)
    x(pair.source, f"DELETE FROM {src} WHERE id IN (7, 8)")
    first = pair.sync(job, source_url=source_url)
    assert (first.compared, first.deleted) == ("fingerprints", 2)
    again = pair.sync(job, source_url=source_url)  # flagged rows do not make buckets differ
    assert (again.compared, again.staged, again.deleted, again.updated) == ("fingerprints", 0, 0, 0)
    x(pair.source, f"INSERT INTO {src} VALUES (7, 'back')")
    back = pair.sync(job, source_url=source_url)
    assert (back.compared, back.updated, back.inserted) == ("fingerprints", 1, 0)
    rows = q(pair.target, f"SELECT id, v, gone FROM {target} WHERE id IN (7, 8) ORDER BY id")
    assert [tuple(r) for r in rows] == [(7, "back", False), (8, "v8", True)]


def test_a_value_that_does_not_fit_is_still_refused(pair: Pair, source_url: str) -> None:
    """A value too long for the target is never cut to what the target holds, so the bucket
    differs and the staging check refuses it as a full comparison would."""
    src = _source(pair, "fpv", "id int PRIMARY KEY, code text", "g, 'abcdefghij'", 1000)
    target = f"public.{src}_t"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, code varchar(10))")
    job = _job(pair, src, target=target)
    pair.sync(job, source_url=source_url)
    x(pair.source, f"UPDATE {src} SET code = 'abcdefghijk' WHERE id = 3")
    before = pair.versions(target)
    with pytest.raises(ValueDoesNotFit, match="id=3"):
        pair.sync(job, source_url=source_url)
    assert changed(before, pair.versions(target)) == set()


def test_most_rows_changed_reads_every_row_and_small_targets_compare_in_full(
    pair: Pair, source_url: str
) -> None:
    src = _source(pair, "fpm", "id int PRIMARY KEY, v int", "g, g", 2000)
    job = _job(pair, src)
    pair.sync(job, source_url=source_url)
    x(pair.source, f"UPDATE {src} SET v = v + 1 WHERE id % 2 = 0")
    result = pair.sync(job, source_url=source_url)
    assert (result.compared, result.updated) == ("full", 1000)
    auto = job.model_copy(update={"compare": "auto"})  # 2,000 rows: below fingerprint.MIN_ROWS
    assert pair.sync(auto, source_url=source_url).compared == "full"
    full = job.model_copy(update={"compare": "full"})
    x(pair.source, f"UPDATE {src} SET v = 0 WHERE id = 1")
    last = pair.sync(full, source_url=source_url)
    assert (last.compared, last.updated) == ("full", 1)


def test_redshift_keys_of_other_types_compare_in_full(pair: Pair, source_url: str) -> None:
    if not is_redshift(source_url):
        pytest.skip("the postgres dialect hashes any key type")
    src = _source(pair, "fpk", "day date PRIMARY KEY, v int", "'2020-01-01'::date + g, g", 500)
    job = _job(pair, src, key=["day"])
    pair.sync(job, source_url=source_url)
    x(pair.source, f"UPDATE {src} SET v = 0 WHERE v = 5")
    result = pair.sync(job, source_url=source_url)
    assert (result.compared, result.updated) == ("full", 1)


def test_a_kept_target_summary_is_used_until_anything_else_writes_to_the_target(
    pair: Pair,
) -> None:
    """After a run that wrote every difference, the next run reuses the target's summary
    (the data-version triggers vouch that nothing else wrote); any other write, a disabled
    trigger or a rewritten table makes it summarise the target again and repair it."""
    src = _source(pair, "fpk", "id int PRIMARY KEY, v text", "2 * g, 'v' || g", 4000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="hard")
    pair.sync(job)  # a first load, into a table the run creates: triggers installed with it
    assert pair.sync(job).target_summary == "computed"
    x(pair.source, f"UPDATE {src} SET v = 'changed' WHERE id = 6")
    run = pair.sync(job)
    assert (run.target_summary, run.updated) == ("kept", 1)
    assert pair.sync(job).target_summary == "kept"  # the run keeps what it wrote as well

    def repaired(sql: str, key: int) -> None:
        x(pair.target, sql)
        before = pair.versions(target)
        result = pair.sync(job)
        assert result.target_summary == "computed"
        if key >= 0:
            assert changed(before, pair.versions(target)) == {key}
        digest = "SELECT count(*), sum(hashtext(t::text)) FROM {} t"
        assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))
        assert pair.sync(job).target_summary == "kept"

    repaired(f"UPDATE {target} SET v = 'edited' WHERE id = 10", 10)
    repaired(f"INSERT INTO {target} VALUES (7, 'stray')", 7)  # between two of the job's keys
    repaired(f"DELETE FROM {target} WHERE id = 18", 18)
    repaired(f"VACUUM FULL {target}", -1)  # a new file: nothing kept is trusted
    # A write the triggers cannot see: with one disabled, nothing kept is trusted or kept.
    x(pair.target, f"ALTER TABLE {target} DISABLE TRIGGER r2sf_dv_upd")
    x(pair.target, f"UPDATE {target} SET v = 'unseen' WHERE id = 22")
    before = pair.versions(target)
    result = pair.sync(job)
    assert (result.target_summary, changed(before, pair.versions(target))) == ("computed", {22})
    assert pair.sync(job).target_summary == "computed"
    x(pair.target, f"ALTER TABLE {target} ENABLE TRIGGER r2sf_dv_upd")
    # Enabled again, but not ALWAYS: this run makes it so, and keeps nothing; the next keeps.
    assert pair.sync(job).target_summary == "computed"
    assert pair.sync(job).target_summary == "computed"
    assert pair.sync(job).target_summary == "kept"


def test_a_redshift_job_keeps_what_the_target_holds_not_what_the_summary_saw(
    pair: Pair,
) -> None:
    """A Redshift source reads the summary and the differing rows in two queries, not one
    snapshot: a row that changes between them is merged as the second read it. The summary the
    run keeps must describe that row as written, so that when the source changes it back, the
    next run (comparing against the kept summary) still finds it different and repairs it."""
    src = _source(pair, "fpr", "id int PRIMARY KEY, v text", "g, 'v' || g", 4000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="hard")
    between: list[str] = []

    def on_query(sql: str) -> None:
        # The second query of a run that found differing buckets reads their rows.
        if between and src in sql and "AS r2sf_src WHERE" in sql:
            x(pair.source, between.pop())

    with RedshiftShim(pair.source, on_query=on_query) as shim:
        url = shim.url()
        pair.sync(job, source_url=url)  # a first load: the data-version triggers come with it
        assert pair.sync(job, source_url=url).target_summary == "computed"
        assert pair.sync(job, source_url=url).target_summary == "kept"
        x(pair.source, f"UPDATE {src} SET v = 'changed' WHERE id = 6")
        between.append(f"UPDATE {src} SET v = 'between' WHERE id = 7")  # the same key range
        run = pair.sync(job, source_url=url)
        assert (run.compared, run.target_summary, run.updated) == ("fingerprints", "kept", 2)
        assert not between
        assert q(pair.target, f"SELECT v FROM {target} WHERE id = 7")[0][0] == "between"
        x(pair.source, f"UPDATE {src} SET v = 'v7' WHERE id = 7")  # as the summary saw it
        before = pair.versions(target)
        run = pair.sync(job, source_url=url)
        assert (run.target_summary, changed(before, pair.versions(target))) == ("kept", {7})
        assert pair.sync(job, source_url=url).target_summary == "kept"
    assert shim.errors == []
    digest = "SELECT count(*), sum(hashtext(t::text)) FROM {} t"
    assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))


def test_the_two_halves_of_a_split_summary_read_one_snapshot(pair: Pair) -> None:
    """With the target's summary kept, a PostgreSQL source summarises even and odd buckets on
    two connections. A row changed after the first half began must be invisible to the second
    (and to the staging query) too: seen by the odd half but staged from the older snapshot,
    it would be merged as it was, its new summary kept, and the change hidden from every
    later run. The shim, here a plain relay in front of a PostgreSQL source, writes the change
    as the odd half's query arrives."""
    src = _source(pair, "fpo", "id int PRIMARY KEY, v text", "g, 'v' || g", 4000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="hard")
    seen: list[str] = []
    between: list[str] = []

    def on_query(sql: str) -> None:
        if src in sql and "% 2 <> 0" in sql:
            seen.append(sql)
            if between:
                x(pair.source, between.pop())

    with RedshiftShim(pair.source, on_query=on_query) as shim:
        url = shim.url().replace("redshift://", "postgresql://", 1)
        pair.sync(job, source_url=url)
        assert pair.sync(job, source_url=url).target_summary == "computed"
        assert pair.sync(job, source_url=url).target_summary == "kept"
        assert seen  # the run did split its summary
        # id 40 lies in key range 1 (ids 32-63): an odd bucket.
        between.append(f"UPDATE {src} SET v = 'late' WHERE id = 40")
        run = pair.sync(job, source_url=url)
        assert not between and (run.target_summary, run.written) == ("kept", 0)
        run = pair.sync(job, source_url=url)  # the change, found against what was kept
        assert (run.target_summary, run.updated) == ("kept", 1)
    assert shim.errors == []
    assert q(pair.target, f"SELECT v FROM {target} WHERE id = 40")[0][0] == "late"


def test_a_summary_query_runs_with_its_own_settings(pair: Pair) -> None:
    """The settings a summary asks for (engine: its work_mem, and no parallel workers for a
    split one) hold in the source's shared-snapshot transaction, for the query that exports
    the snapshot and for one that reads in it (the split's other half)."""
    sql = "SELECT current_setting('work_mem') AS w, current_setting('max_parallel_workers_per_gather') AS p"

    async def read(settings: dict[str, str]) -> tuple[bytes, bytes]:
        exporter = open_source(pair.source, sql, None, None, export=True, settings=settings)
        try:
            await exporter.open()
            snapshot = getattr(exporter, "snapshot", None)
            reader = open_source(pair.source, sql, None, None, snapshot=snapshot, settings=settings)
            try:
                await reader.open()
                first = b"".join([chunk async for chunk in exporter.batches()])
                return first, b"".join([chunk async for chunk in reader.batches()])
            finally:
                await reader.close()
        finally:
            await exporter.close()

    default = asyncio.run(read({}))
    asked = asyncio.run(read({"work_mem": "64MB", "max_parallel_workers_per_gather": "0"}))
    assert asked == (b"64MB\t0\n", b"64MB\t0\n") and default[0] != asked[0]


def test_text_and_composite_keys_bucket_by_hash(pair: Pair) -> None:
    """Keys other than one integer column fall in buckets by a hash of the key (the postgres
    dialect): changes, inserts and deletes are found exactly as with key ranges."""
    src = _source(
        pair,
        "fph",
        "region text, id int, amount numeric(10,2), PRIMARY KEY (region, id)",
        "'r' || (g % 7), g, g / 3.0",
        6000,
    )
    target = f"public.{src}"
    job = _job(pair, src, target=target, key=["region", "id"], deletes="hard")
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET amount = amount + 0.01 WHERE id IN (5, 50)")
    x(pair.source, f"DELETE FROM {src} WHERE id = 500")
    x(pair.source, f"INSERT INTO {src} VALUES ('new', 1, 1)")
    result = pair.sync(job)
    assert result.compared == "fingerprints" and 0 < result.staged < 1500
    assert (result.inserted, result.updated, result.deleted) == (1, 2, 1)
    digest = "SELECT count(*), sum(hashtext(t::text)) FROM {} t"
    assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))


# Changes PostgreSQL's own hash functions cannot see (each pair hashes alike), which the
# fingerprint adds parts for; and a swap of two rows' values, which a plain sum of row hashes
# (each a linear combination of its values' hashes) cannot see.
HIDDEN_BY_TYPE_HASHES = [
    ("numeric", "1.5", "-1.5"),  # hash_numeric ignores the sign
    ("numeric", "'NaN'", "'Infinity'"),  # both hash to the seed
    ("numeric", "NULL", "'NaN'"),  # the seed is 0, NULL's hash
    ("numeric", "'-Infinity'", "'Infinity'"),
    ("float4", "NULL", "0"),
    ("float8", "NULL", "0"),  # NULL hashes as 0, and so does 0.0
    ("bigint", "0", "4294967297"),  # int8 hashes lo XOR hi 32 bits
    ("timestamp", "'2000-01-01 00:00:00'", "'2000-01-01 01:11:34.967297'"),  # 0, 2^32+1 us
    ("timestamptz", "'2000-01-01 00:00:00+00'", "'2000-01-01 01:11:34.967297+00'"),
    # A timestamp's own hash folds its 64 bits into 32, and its epoch as a float8 cannot tell
    # microseconds apart after the year 2106: a fingerprint built on either misses these.
    ("timestamp", "'3000-01-01 00:00:00'", "'3000-01-01 00:00:00.000001'"),
    ("timestamp", "'-infinity'", "'infinity'"),
    ("timestamp", "NULL", "'2000-01-01 00:00:00'"),
    ("bigint", "NULL", "0"),
    ("integer", "NULL", "0"),
    ("boolean", "NULL", "false"),
    ("boolean", "false", "true"),
    ("text", "NULL", "''"),
    ("numeric", "NULL", "0"),
    ("numeric", "'-Infinity'", "'NaN'"),
    ("jsonb", "'1'", "'[1]'"),  # jsonb's hash of a scalar and of an array holding it
    ("interval", "'0'", "'4294967297 microseconds'"),
]


@pytest.mark.parametrize(("kind", "old", "new"), HIDDEN_BY_TYPE_HASHES,
                         ids=[f"{k}:{o}->{n}"[:40] for k, o, n in HIDDEN_BY_TYPE_HASHES])  # fmt: skip
def test_changes_a_type_hash_cannot_see_are_found(
    pair: Pair, kind: str, old: str, new: str
) -> None:
    src = _source(pair, "fpt", f"id int PRIMARY KEY, v {kind}, w text", f"g, {old}, 'w' || g", 4000)
    job = _job(pair, src)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET v = {new} WHERE id = 100")
    # Two rows of one bucket swap their w: every value of the column is still there.
    x(pair.source, f"UPDATE {src} SET w = CASE id WHEN 10 THEN 'w11' ELSE 'w10' END"
                   " WHERE id IN (10, 11)")  # fmt: skip
    before = pair.versions(f"public.{src}")
    result = pair.sync(job)
    assert (result.compared, result.updated) == ("fingerprints", 3)
    assert changed(before, pair.versions(f"public.{src}")) == {10, 11, 100}


def test_values_swapped_between_columns_of_one_row_are_found(pair: Pair) -> None:
    """A row's hash combines its columns' hashes; two columns of one type swapping their
    values (or both NULL becoming both set) must still change it."""
    src = _source(
        pair,
        "fps",
        "id int PRIMARY KEY, a int, b int, c text, d text, e numeric, f numeric",
        "g, g, g + 1, 'c' || g, 'd' || g, g / 4.0, g / 8.0",
        4000,
    )
    job = _job(pair, src)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET a = b, b = a WHERE id = 100;"
                   f" UPDATE {src} SET c = d, d = c WHERE id = 200;"
                   f" UPDATE {src} SET e = f, f = e WHERE id = 300;"
                   f" UPDATE {src} SET a = NULL, b = NULL WHERE id = 400")  # fmt: skip
    before = pair.versions(f"public.{src}")
    result = pair.sync(job)
    assert (result.compared, result.updated) == ("fingerprints", 4)
    assert changed(before, pair.versions(f"public.{src}")) == {100, 200, 300, 400}


def test_a_soft_delete_flag_left_null_is_live(pair: Pair) -> None:
    """A NULL flag is a live row for the merge's deletes: it must be in the target's summary
    (and set to false, as the full comparison does), and flagged once its key is gone."""
    src = _source(pair, "fpn", "id int PRIMARY KEY, v text", "g, 'v' || g", 4000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="soft", soft_delete_column="gone")
    pair.sync(job)
    x(pair.target, f"ALTER TABLE {target} ALTER COLUMN gone DROP NOT NULL;"
                   f" UPDATE {target} SET gone = NULL WHERE id IN (9, 19)")  # fmt: skip
    x(pair.source, f"DELETE FROM {src} WHERE id = 9")
    result = pair.sync(job)
    assert (result.compared, result.deleted, result.updated) == ("fingerprints", 1, 1)
    rows = q(pair.target, f"SELECT id, gone FROM {target} WHERE id IN (9, 19) ORDER BY id")
    assert [tuple(r) for r in rows] == [(9, True), (19, False)]


def _kept_job(pair: Pair) -> tuple[str, str, Job]:
    src = _source(pair, "fpc", "id int PRIMARY KEY, v text, w text", "g, 'v' || g, 'w' || g", 4000)
    target = f"public.{src}"
    job = _job(pair, src, target=target, deletes="hard")
    pair.sync(job)
    pair.sync(job)
    assert pair.sync(job).target_summary == "kept"
    return src, target, job


@pytest.mark.parametrize(
    "sql",
    [
        # Writes no trigger sees, with the triggers back on before the next run.
        "ALTER TABLE {t} DISABLE TRIGGER ALL; UPDATE {t} SET v = 'unseen' WHERE id = 22;"
        " ALTER TABLE {t} ENABLE TRIGGER ALL",
        # Columns emptied or swapped without rewriting the table.
        "ALTER TABLE {t} DROP COLUMN w; ALTER TABLE {t} ADD COLUMN w text",
        "ALTER TABLE {t} RENAME v TO tmp; ALTER TABLE {t} RENAME w TO v;"
        " ALTER TABLE {t} RENAME tmp TO w",
    ],
    ids=["triggers off and on", "column dropped and added", "columns renamed"],
)
def test_a_kept_summary_is_not_trusted_after_what_triggers_cannot_see(pair: Pair, sql: str) -> None:
    src, target, job = _kept_job(pair)
    x(pair.target, sql.format(t=target))
    result = pair.sync(job)
    assert result.target_summary != "kept"  # summarised again (or, all rows differing, full)
    digest = "SELECT count(*), sum(hashtext(t::text)) FROM (SELECT id, v, w FROM {}) t"
    assert q(pair.target, digest.format(target)) == q(pair.source, digest.format(src))


def test_partitioned_targets_compare_but_keep_nothing(pair: Pair) -> None:
    """A write into a partition fires no trigger on the parent: nothing kept is trusted."""
    src = _source(pair, "fpp", "id int PRIMARY KEY, v text", "g, 'v' || g", 4000)
    target = f"public.{src}"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);"
                   f" CREATE TABLE {src}_p PARTITION OF {target} FOR VALUES FROM (0) TO (10000)")  # fmt: skip
    job = _job(pair, src, target=target, deletes="hard")
    pair.sync(job)
    for _ in range(2):
        run = pair.sync(job)
        assert (run.compared, run.target_summary) == ("fingerprints", "computed")
    x(pair.target, f"UPDATE {src}_p SET v = 'unseen' WHERE id = 5")
    assert pair.sync(job).updated == 1


def test_keys_of_other_types_compare_in_full(pair: Pair) -> None:
    """A key whose type has no trustworthy hash (a domain here) could fall in different
    buckets on the two sides: deletes would miss it, so such jobs read every row."""
    src = unique("fpd")
    x(
        pair.source,
        f"CREATE TABLE {src} (id numeric PRIMARY KEY, v text);"
        f" INSERT INTO {src} SELECT g, 'v' || g FROM generate_series(1, 4000) g;"
        f" UPDATE {src} SET id = 7.0 WHERE id = 7",
    )
    target = f"public.{src}"
    x(pair.target, f"CREATE DOMAIN {src}_d AS numeric(10,0);"
                   f" CREATE TABLE {target} (id {src}_d PRIMARY KEY, v text)")  # fmt: skip
    job = _job(pair, src, target=target, deletes="hard")
    pair.sync(job)
    x(pair.source, f"DELETE FROM {src} WHERE id = 7")
    result = pair.sync(job)
    assert (result.compared, result.deleted) == ("full", 1)


def test_a_null_into_a_not_null_float_column_is_still_refused(pair: Pair) -> None:
    """float8's own hash gives 0 for 0, as NULL gets: were the value hashed by it rather than
    by its send form, the row would look unchanged and the staging check, which refuses the
    NULL, would never see it."""
    src = _source(pair, "fpz", "id int PRIMARY KEY, r float8", "g, 0", 4000)
    target = f"public.{src}_t"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, r float8 NOT NULL)")
    job = _job(pair, src, target=target)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET r = NULL WHERE id = 5")
    with pytest.raises(ValueDoesNotFit, match="id=5"):
        pair.sync(job)


@pytest.mark.parametrize("compare", ["fingerprints", "full"])
def test_a_null_key_in_the_target_is_deleted_on_both_paths(pair: Pair, compare: str) -> None:
    """A unique index lets the target hold a NULL key, which no source key matches: both
    paths delete it (key ranges need a NOT NULL key, so fingerprints bucket it by hash)."""
    src = _source(pair, "fpq", "id int PRIMARY KEY, v text", "g, 'v' || g", 4000)
    target = f"public.{src}_t"
    x(pair.target, f"CREATE TABLE {target} (id int UNIQUE, v text)")  # NULL keys allowed
    job = _job(pair, src, target=target, deletes="hard", compare=compare)
    pair.sync(job)
    x(pair.target, f"INSERT INTO {target} VALUES (NULL, 'no key')")
    x(pair.source, f"DELETE FROM {src} WHERE id = 17")
    result = pair.sync(job)
    assert (result.compared, result.deleted) == (compare, 2)
    assert q(pair.target, f"SELECT count(*) FROM {target} WHERE id IS NULL OR id = 17")[0][0] == 0


@pytest.mark.parametrize(
    "setup",
    [
        "CREATE TABLE {t}_parent (id int NOT NULL, v text) PARTITION BY RANGE (id);"
        " CREATE TABLE {t} PARTITION OF {t}_parent (PRIMARY KEY (id))"
        " FOR VALUES FROM (0) TO (100000)",
        "CREATE TABLE {t}_parent (id int NOT NULL, v text);"
        " CREATE TABLE {t} (PRIMARY KEY (id)) INHERITS ({t}_parent)",
    ],
    ids=["partition", "inheritance child"],
)
def test_tables_written_through_a_parent_keep_no_summary(pair: Pair, setup: str) -> None:
    """A write through a parent fires no statement trigger on the target (a partition or an
    inheritance child; PostgreSQL does not even let the triggers' transition tables on one):
    such a target is summarised on every run."""
    src = _source(pair, "fpi", "id int PRIMARY KEY, v text", "g, 'v' || g", 4000)
    target = f"public.{src}"
    x(pair.target, setup.format(t=target))
    job = _job(pair, src, target=target, deletes="hard")
    pair.sync(job)
    pair.sync(job)
    x(pair.target, f"UPDATE {target}_parent SET v = 'unseen' WHERE id = 22")
    result = pair.sync(job)
    assert (result.target_summary, result.updated) == ("computed", 1)


def test_writes_in_replica_mode_move_the_version_too(pair: Pair) -> None:
    """The data-version triggers are enabled ALWAYS: logical replication and restore tools
    write with session_replication_role = replica, which skips ordinary triggers."""
    _, target, job = _kept_job(pair)
    x(
        pair.target,
        f"SET session_replication_role = replica; UPDATE {target} SET v = 'x' WHERE id = 5",
    )
    result = pair.sync(job)
    assert (result.target_summary, result.updated) == ("computed", 1)


def test_a_target_with_its_own_triggers_keeps_no_summary(pair: Pair) -> None:
    """A BEFORE trigger may store other values than the merge wrote: the target then does not
    summarise to the source's summary, so nothing is kept (each run summarises the target)."""
    src = _source(pair, "fpu", "id int PRIMARY KEY, v text", "g, 'V' || g", 4000)
    target = f"public.{src}_t"
    x(
        pair.target,
        f"CREATE TABLE {target} (id int PRIMARY KEY, v text);"
        f" CREATE FUNCTION {src}_lower() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN IF NEW.id % 1000 = 0 THEN NEW.v := lower(NEW.v); END IF; RETURN NEW; END $$;"
        f" CREATE TRIGGER lower_v BEFORE INSERT OR UPDATE ON {target}"
        f" FOR EACH ROW EXECUTE FUNCTION {src}_lower()",
    )
    job = _job(pair, src, target=target, deletes="hard")
    pair.sync(job)
    full = job.model_copy(update={"compare": "full"})
    for _ in range(2):
        dry_full = pair.sync(full, dry_run=True)
        run = pair.sync(job)
        assert run.target_summary == "computed"
        assert (run.updated, run.inserted) == (dry_full.updated, dry_full.inserted)


def test_trailing_spaces_beyond_a_length_limit_fit_as_postgresql_cuts_them(pair: Pair) -> None:
    """PostgreSQL stores 'abc     ' into char(5) and varchar(5) as 'abc  ': the staging check
    lets it through on both paths (the full comparison used to refuse it, while fingerprints,
    which hash char(n) without trailing spaces, did not even stage the char(5) column's change),
    and both write the same: varchar(5) changes, char(5) does not."""
    src = _source(pair, "fpb", "id int PRIMARY KEY, c text, w text", "g, 'abc', 'abc'", 4000)
    target = f"public.{src}_t"
    x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, c char(5), w varchar(5))")
    job = _job(pair, src, target=target)
    pair.sync(job)
    x(pair.source, f"UPDATE {src} SET c = 'abc     ', w = 'abc     ' WHERE id = 5")
    full = pair.sync(job.model_copy(update={"compare": "full"}), dry_run=True)
    result = pair.sync(job)
    assert (full.updated, full.skipped) == (result.updated, result.skipped) == (1, 0)
    rows = q(pair.target, f"SELECT c, w FROM {target} WHERE id = 5")
    assert tuple(rows[0]) == ("abc  ", "abc  ")


def test_char_columns_summarise_alike_on_both_sides(pair: Pair, source_url: str) -> None:
    """CHAR(n)'s padding is no part of its value: an unchanged rerun finds every bucket equal
    (the Redshift dialect once counted the padding in the source's length prefix only, so every
    bucket of a table with a CHAR column differed on every run), and a changed CHAR is found."""
    src = _source(pair, "chars", "id int PRIMARY KEY, code char(5), label varchar(8)",
                  "g, CASE WHEN g % 3 = 0 THEN 'ab' ELSE 'a b' END, 'x'", 3000)  # fmt: skip
    job = _job(pair, src)
    assert pair.sync(job, source_url=source_url).inserted == 3000
    again = pair.sync(job, source_url=source_url)
    assert (again.compared, again.staged, again.updated) == ("fingerprints", 0, 0)
    x(pair.source, f"UPDATE {src} SET code = 'ab ' WHERE id = 3")  # equal: padding
    x(pair.source, f"UPDATE {src} SET code = 'abc' WHERE id = 6")
    before = pair.versions(f"public.{src}")
    result = pair.sync(job, source_url=source_url)
    assert (result.compared, result.updated) == ("fingerprints", 1)
    assert changed(before, pair.versions(f"public.{src}")) == {6}
