"""Fingerprints against a full comparison, on random changes: the same source synced into two
identical targets, one job comparing fingerprints and one comparing every row, must leave the
two targets holding the same values and must write the same rows, round after round.

The changes are drawn (seeded, so a failure repeats) from values that sit next to each other
for some hash or text form: 1 and 10000 and 1.0 and 1.00 in a numeric, 0 and -0 and the last
bit of a float, NULL and '' and 'a ' in text, int8 values whose 32-bit halves are swapped,
timestamps a microsecond or 2^32 microseconds apart, 'NaN' and the infinities; plus rows deleted
and inserted inside and outside the key range; and writes made to both targets directly (as
OData or psql would), which both runs must find and repair. Some target columns have other
types than the source's (numeric(12,3), text), so values are compared as the target stores them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.conftest import Databases
from tests.redshift_shim import RedshiftShim
from tests.test_sync_support import Pair, changed, q, unique, x

ROWS = 2000
ROUNDS = 6

# column -> (source type, target type, values as SQL literals). The first value fills the table.
COLUMNS: dict[str, tuple[str, str, list[str]]] = {
    "num": ("numeric", "numeric", ["1.0", "1.00", "1", "-1", "10000", "0.0001", "0", "-0.0",
                                   "'NaN'", "'Infinity'", "'-Infinity'", "NULL",
                                   "123456789012345678901234567890.5"]),
    "num3": ("numeric", "numeric(12,3)", ["1.0", "1.00", "1.0001", "-1", "10000", "0", "NULL",
                                          "2.0005", "2.0004"]),
    "numtext": ("numeric", "text", ["1.0", "1.00", "1", "-0.0", "0", "NULL"]),
    "f8": ("float8", "float8", ["0.5", "0.5000000000000001", "0", "'-0'", "'NaN'",
                                "'Infinity'", "'-Infinity'", "1e308", "5e-324", "NULL"]),
    "f4": ("float4", "float4", ["1.1", "'1.1000001'", "0", "'-0'", "'NaN'", "NULL"]),
    "i8": ("int8", "int8", ["1", "4294967296", "4294967297", "-4294967296", "0", "-1",
                            "9223372036854775807", "NULL"]),
    "i2": ("int2", "int2", ["0", "-1", "32767", "1", "NULL"]),
    "t": ("text", "text", ["'a'", "''", "' '", "'a '", "' a'", "'x|y'", "'-'", "'NULL'",
                           "'ü'", "E'\\t'", "NULL"]),
    "vc": ("varchar(10)", "varchar(10)", ["'a'", "'a '", "''", "'b'", "NULL"]),
    "bp": ("char(5)", "char(5)", ["'a'", "'a '", "''", "'b'", "NULL"]),
    "b": ("bool", "bool", ["true", "false", "NULL"]),
    "d": ("date", "date", ["'2024-01-01'", "'1999-12-31'", "'infinity'", "'-infinity'", "NULL"]),
    "ts": ("timestamp", "timestamp", ["'2024-01-01 00:00:00'", "'2024-01-01 00:00:00.000001'",
                                      "'3000-01-01'", "'3000-01-01 00:00:00.000001'",
                                      "'2024-01-01 01:11:34.967296'", "'infinity'", "NULL"]),
    "tz": ("timestamptz", "timestamptz", ["'2024-01-01 00:00:00+00'", "'2024-01-01 01:00:00+01'",
                                          "'2024-01-01 00:00:00.000001+00'", "NULL"]),
    "j": ("jsonb", "jsonb", ["'1'", "'[1]'", "'{\"a\": 1}'", "'{\"a\":1, \"b\":2}'", "'null'",
                             "NULL"]),
    "iv": ("interval", "interval", ["'1 day'", "'24 hours'", "'1 mon'", "'30 days'", "NULL"]),
    "by": ("bytea", "bytea", ["'\\x'", "'\\x00'", "'\\x0000'", "NULL"]),
}  # fmt: skip
# What a Redshift cluster holds (no jsonb, interval, bytea; no infinities, and float NaN aside).
REDSHIFT = {"num", "num3", "numtext", "i8", "i2", "t", "vc", "bp", "b", "ts", "tz", "f8"}
_NOT_ON_REDSHIFT = {"'NaN'", "'Infinity'", "'-Infinity'", "'infinity'", "'-infinity'"}


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


@pytest.fixture(scope="module", params=["postgres", "redshift"])
def source_url(pair: Pair, request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "postgres":
        yield pair.source
        return
    with RedshiftShim(pair.source) as shim:
        yield shim.url()
    assert shim.errors == []


def _pools(redshift: bool) -> dict[str, list[str]]:
    return {
        c: [v for v in values if not (redshift and v in _NOT_ON_REDSHIFT)]
        for c, (_, _, values) in COLUMNS.items()
        if not redshift or c in REDSHIFT
    }


def _row(rng: random.Random, pools: dict[str, list[str]], key: int) -> str:
    return f"({key}, " + ", ".join(rng.choice(values) for values in pools.values()) + ")"


def _contents(url: str, table: str) -> list[tuple[object, ...]]:
    """Every row as its text forms, in key order: equal only when every value is the same."""
    return [tuple(r) for r in q(url, f"SELECT id, t.*::text FROM {table} t ORDER BY id")]


@pytest.mark.parametrize("seed", [1, 2])
def test_fingerprints_write_what_a_full_comparison_writes(
    pair: Pair, source_url: str, seed: int
) -> None:
    redshift = source_url != pair.source
    pools = _pools(redshift)
    rng = random.Random(seed)
    src = unique("fuzz")
    x(pair.source, f"CREATE TABLE {src} (id int PRIMARY KEY, "
                   + ", ".join(f"{c} {COLUMNS[c][0]}" for c in pools) + ")")  # fmt: skip
    first = ", ".join(values[0] for values in pools.values())
    x(pair.source, f"INSERT INTO {src} SELECT g, {first} FROM generate_series(1, {ROWS}) g")
    targets = {}
    for compare in ("fingerprints", "full"):
        target = f"public.{src}_{compare[:2]}"
        x(pair.target, f"CREATE TABLE {target} (id int PRIMARY KEY, "
                       + ", ".join(f"{c} {COLUMNS[c][1]}" for c in pools) + ")")  # fmt: skip
        job = pair.job(name=f"{src}_{compare[:2]}", query=f"select * from {src}", target=target,
                       key=["id"], deletes="hard", compare=compare,
                       max_deletes={"percent": 100})  # fmt: skip
        assert pair.sync(job, source_url=source_url).inserted == ROWS
        targets[compare] = (target, job)
    ids = set(range(1, ROWS + 1))
    compared: list[str] = []
    for round_ in range(ROUNDS):
        statements = []
        for _ in range(rng.randint(1, 20)):
            column = rng.choice(list(pools))
            key = rng.choice(sorted(ids))
            statements.append(
                f"UPDATE {src} SET {column} = {rng.choice(pools[column])} WHERE id = {key}"
            )
        for key in rng.sample(sorted(ids), rng.randint(0, 3)):
            statements.append(f"DELETE FROM {src} WHERE id = {key}")
            ids.discard(key)
        for _ in range(rng.randint(0, 3)):
            key = rng.choice([k for k in range(1, ROWS + 50) if k not in ids])
            statements.append(f"INSERT INTO {src} VALUES {_row(rng, pools, key)}")
            ids.add(key)
        x(pair.source, "; ".join(statements))
        # Writes to the targets themselves (OData, psql), the same to both: found and repaired.
        outside = []
        for _ in range(rng.randint(0, 3)):
            column, key = rng.choice(list(pools)), rng.choice(sorted(ids))
            outside.append(
                rng.choice([
                    f"UPDATE {{t}} SET {column} = {rng.choice(pools[column])} WHERE id = {key}",
                    f"DELETE FROM {{t}} WHERE id = {key}",
                    f"INSERT INTO {{t}} VALUES {_row(rng, pools, ROWS + 50 + key % 10)}"
                    " ON CONFLICT DO NOTHING",
                ])
            )  # fmt: skip
        for target, _ in targets.values():
            if outside:
                x(pair.target, "; ".join(o.replace("{t}", target) for o in outside))
        written = {}
        for compare, (target, job) in targets.items():
            before = pair.versions(target)
            result = pair.sync(job, source_url=source_url)
            written[compare] = changed(before, pair.versions(target))
            if compare == "fingerprints":
                compared.append(result.compared)
        why = f"seed {seed}, round {round_}: {statements}, targets: {outside}"
        assert written["fingerprints"] == written["full"], why
        fp, full = (_contents(pair.target, t) for t, _ in targets.values())
        assert fp == full, why
    # Most rounds compared fingerprints (one whose changes fill most buckets falls back to
    # every row, by design): the test cannot pass on the full path alone.
    assert compared.count("fingerprints") >= ROUNDS - 1, compared
