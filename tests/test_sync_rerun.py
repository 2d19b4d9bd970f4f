"""Reruns write exactly the rows whose values changed as the target stores them, whichever join
(hash, or the key-ordered merge of a target in key order) the run takes, and a dry run counts
what the real run then writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Databases
from tests.test_sync_support import Pair, changed, q, unique, x


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


def tricky_tables(pair: Pair, rows: int = 400) -> tuple[str, str]:
    """A source whose values sit next to changes that keep a column's text or its equality,
    and a target made beforehand with other types for some of them."""
    src = unique("tricky")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int PRIMARY KEY, amount numeric, label varchar(20),"
        " note text, code varchar(10), ratio float8);"
        f" INSERT INTO {src} SELECT g, 1.0, 'x', '', 'a', 0.5 FROM generate_series(1, {rows}) g",
    )
    target = f"public.{src}_t"
    # amount as text keeps the source's scale (1.0 and 1.00 differ there); amount3 as
    # numeric(12,3) makes both 1.000 (the same stored value).
    x(
        pair.target,
        f"CREATE TABLE {target} (id int PRIMARY KEY, amount text, amount3 numeric(12,3),"
        " label varchar(20), note text, code varchar(10), ratio float8)",
    )
    return src, target


def change_keeping_text_or_equality(pair: Pair, src: str) -> None:
    """Changes of rows 1-6 of `tricky_tables`' source that keep a value's text or its equality;
    every one but row 6's (1.0 rewritten as 1.0) is a change a rerun must write somewhere."""
    x(pair.source, f"UPDATE {src} SET amount = 1.00 WHERE id = 1")  # same number, new scale
    x(pair.source, f"UPDATE {src} SET label = NULL WHERE id = 2")  # 'x' -> NULL
    x(pair.source, f"UPDATE {src} SET note = NULL WHERE id = 3")  # '' -> NULL
    x(pair.source, f"UPDATE {src} SET code = 'a ' WHERE id = 4")  # a trailing space
    x(pair.source, f"UPDATE {src} SET ratio = 0.5000000000000001 WHERE id = 5")  # last bit
    x(pair.source, f"UPDATE {src} SET amount = 1.0 WHERE id = 6")  # rewritten, not changed


@pytest.mark.parametrize("ordered", [False, True], ids=["hash join", "merge join"])
def test_changes_that_keep_a_text_form_or_equality_are_written_exactly(
    pair: Pair, ordered: bool
) -> None:
    src, target = tricky_tables(pair)
    job = pair.job(
        name=src,
        query=f"select id, amount, amount as amount3, label, note, code, ratio from {src}",
        target=target,
        key=["id"],
    )
    pair.sync(job)
    if ordered:
        # Statistics with the key's correlation at 1: the run turns hash joins off.
        x(pair.target, f"ANALYZE {target}")
    change_keeping_text_or_equality(pair, src)
    before = pair.versions(target)
    dry = pair.sync(job, dry_run=True)
    result = pair.sync(job)
    assert changed(before, pair.versions(target)) == {1, 2, 3, 4, 5}
    assert (result.inserted, result.updated, result.deleted) == (0, 5, 0)
    assert (dry.inserted, dry.updated, dry.deleted, dry.unchanged) == (0, 5, 0, 395)
    rows = {r[0]: tuple(r[1:]) for r in q(pair.target, f"SELECT * FROM {target} WHERE id <= 6")}
    assert rows[1][:2] == ("1.00", 1)
    assert rows[2][2] is None and rows[3][3] is None and rows[4][4] == "a "
    assert rows[5][5] == 0.5000000000000001
    assert rows[6][:2] == ("1.0", 1)
    # The way back is a change too: NULL -> '', 'a ' -> 'a'.
    x(pair.source, f"UPDATE {src} SET label = 'x', note = '', code = 'a' WHERE id IN (2, 3, 4)")
    before = pair.versions(target)
    result = pair.sync(job)
    assert changed(before, pair.versions(target)) == {2, 3, 4}
    assert result.updated == 3


def test_every_kind_of_value_survives_a_first_load_and_an_unchanged_rerun_writes_nothing(
    pair: Pair,
) -> None:
    src = unique("kinds")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int PRIMARY KEY, f float8, r real, n numeric, ts timestamptz,"
        " t timestamp(3), d date, iv interval, b bytea, j json, jb jsonb, a int[], u uuid,"
        " c char(4), tm timetz, bo boolean);"
        f" INSERT INTO {src} VALUES"
        " (1, 'NaN', '-Infinity', 'NaN', '2024-03-01 12:00:00.123456+05', '2024-03-01 1:2:3.456',"
        "  '0001-01-01 BC', '1 year -2 days 3 hours', '\\x00ff', '{\"a\": 1.0,  \"b\": [1]}',"
        "  '{\"a\": 1.00}', '{1,NULL,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ab',"
        "  '10:00:00+02', true),"
        " (2, -0.0, 1.5e-40, 123456789012345678901234567890.000000001, 'infinity', NULL,"
        "  '294276-12-31', NULL, '', '[]', 'null', '{}', NULL, NULL, NULL, NULL)",
    )
    target = f"public.{src}_t"
    job = pair.job(name=src, query=f"select * from {src}", target=target, key=["id"])
    assert pair.sync(job).inserted == 2
    text = "SELECT id, f, r, n, ts, t, d, iv, b, j, jb, a, u, c, tm, bo FROM {} ORDER BY id"
    as_text = f"SELECT x::text FROM ({text}) x"
    assert [r[0] for r in q(pair.target, as_text.format(target))] == [
        r[0] for r in q(pair.source, as_text.format(src))
    ]
    before = pair.versions(target)
    result = pair.sync(job)
    assert (result.updated, result.unchanged) == (0, 2)
    assert changed(before, pair.versions(target)) == set()
    # A change inside a json document that json's text keeps apart is written.
    x(pair.source, f'UPDATE {src} SET j = \'{{"a": 1.00,  "b": [1]}}\' WHERE id = 1')
    assert pair.sync(job).updated == 1
