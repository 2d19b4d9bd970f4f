"""Every Redshift type, end to end through the real driver and the extract process, with the
shim negotiating text and binary transfer: each lands exactly in its natural PostgreSQL type,
in its documented text form, or is refused naming the column and the expression to write.

Redshift-only types are PostgreSQL stand-ins (tests/redshift_shim.py STAND_IN_TYPES_SQL) that
the shim announces with Redshift's OIDs, holding values in a cluster's text output format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from sync.errors import SourceError
from tests.conftest import Databases
from tests.redshift_shim import (
    REDSHIFT_ONLY_OIDS,
    STAND_IN_OIDS_SQL,
    STAND_IN_TYPES_SQL,
    RedshiftShim,
)
from tests.test_sync_support import Pair, q, unique, x

# Hex EWKB of POINT(1 2), and of the same point with SRID 4326 (GEOGRAPHY's).
POINT = "0101000000000000000000F03F0000000000000040"
POINT_4326 = "0101000020E6100000000000000000F03F0000000000000040"
LONG = "ünïcødé ✓ 漢字 " + "x" * 20000

COLUMNS = """
    id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, d38 numeric(38,10), r real,
    f double precision, b boolean, c5 char(5), vc varchar(65535), d date, t time, ttz timetz,
    ts timestamp, tstz timestamptz, sup redshift.super, geom redshift.geometry,
    geog redshift.geography, vb redshift.varbyte, ym redshift.intervaly2m,
    ds redshift.intervald2s
"""
ROWS = f"""
(1, -32768, -2147483648, -9223372036854775808, '-9999999999999999999999999999.9999999999',
 1.1, 0.1, true, 'ab', '{LONG}', '4713-01-01 BC', '00:00:00.000001',
 '12:00:01.000001+05:30', '4713-01-01 00:00:00.000001 BC',
 '2008-01-01 12:34:56.000001+05:30', '{{"a":[1,"x"],"b":null,"n":1.50}}', '{POINT}',
 '{POINT_4326}', '00ff10', '1 year 2 mons', '3 days 04:05:06.5'),
(2, 32767, 2147483647, 9223372036854775807, '9999999999999999999999999999.9999999999',
 'NaN', '-0', false, 'abcde', '', '1500-03-01', '12:00:01.000001', '23:59:59.999999-12',
 '294276-12-31 23:59:59.999999', '1582-10-10 00:00:00+00', '"text"', '{POINT}',
 '{POINT_4326}', '', '-1 mons', '-00:00:00.000001'),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL),
(4, 0, 0, 0, 0, '-Infinity', 4.9e-324, true, ' ', E'a''b"c,\\\\d\\nnew line\\t|', '9999-12-31',
 '23:59:59.999999', '00:00:00+00', '1999-12-31 23:59:59.999999',
 '0001-01-01 00:00:00+00', '[1, {{"k": "ü"}}]', '{POINT}', '{POINT_4326}', 'ffffffff',
 '100 years', '99 days 23:59:59.999999'),
(5, 1, 1, 1, 1, 1, 1, true, 'x', 'x', '2000-02-29', '12:00:00', '12:00:00-03:30',
 '2000-02-29 12:00:00', '2000-02-29 12:00:00-03:30', '{{}}', '{POINT}', '{POINT_4326}', '41',
 '1-2', '3 04:05:06.5')
"""

# The natural PostgreSQL type of every column of the target r2sf creates.
CREATED = {
    "id": "integer", "i2": "smallint", "i4": "integer", "i8": "bigint",
    "d38": "numeric(38,10)", "r": "real", "f": "double precision", "b": "boolean",
    "c5": "character(5)", "vc": "character varying(65535)", "d": "date",
    "t": "time without time zone", "ttz": "time with time zone",
    "ts": "timestamp without time zone", "tstz": "timestamp with time zone",
    "sup": "jsonb", "geom": "text", "geog": "text", "vb": "bytea", "ym": "interval",
    "ds": "interval",
}  # fmt: skip

# What each column must read in the target, computed by PostgreSQL from the source's values:
# natural types as themselves; the Redshift-only ones parsed from their text form.
EXPECTED = """
SELECT id, i2::text, i4::text, i8::text, d38::text, r::text, f::text, b::text, c5::text,
       vc::text, d::text, t::text, ttz::text, ts::text, tstz::text,
       sup::text::jsonb::text, geom::text, geog::text,
       ('\\x' || vb::text)::bytea::text, ym::text::interval::text, ds::text::interval::text
FROM {t} ORDER BY id
"""
GOT = """
SELECT id, i2::text, i4::text, i8::text, d38::text, r::text, f::text, b::text, c5::text,
       vc::text, d::text, t::text, ttz::text, ts::text, tstz::text, sup::text, geom, geog,
       vb::text, ym::text, ds::text
FROM {t} ORDER BY id
"""


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(STAND_IN_TYPES_SQL), databases.create())


@pytest.fixture(scope="module", params=["text", "binary"])
def shim(pair: Pair, request: pytest.FixtureRequest) -> Iterator[RedshiftShim]:
    stand_ins = {oid: REDSHIFT_ONLY_OIDS[name] for oid, name in q(pair.source, STAND_IN_OIDS_SQL)}
    assert len(stand_ins) == len(REDSHIFT_ONLY_OIDS)
    with RedshiftShim(pair.source, protocol=request.param, stand_ins=stand_ins) as s:
        yield s
    assert s.errors == []


def test_every_redshift_type_lands_exactly_in_its_postgresql_form(
    pair: Pair, shim: RedshiftShim
) -> None:
    src = unique("matrix")
    x(pair.source, f"CREATE TABLE {src} ({COLUMNS}); INSERT INTO {src} VALUES {ROWS}")
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"])
    binary_before = shim.binary_columns
    assert pair.sync(job, source_url=shim.url()).inserted == 5
    declared = q(
        pair.target,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum",
        f"public.{src}",
    )
    assert dict((r[0], r[1]) for r in declared) == CREATED
    got = [tuple(r) for r in q(pair.target, GOT.format(t=src))]
    want = [tuple(r) for r in q(pair.source, EXPECTED.format(t=src))]
    for g, w in zip(got, want, strict=True):
        assert dict(zip(CREATED, g, strict=True)) == dict(zip(CREATED, w, strict=True))
    # Spot checks against literals, so a shared mistake in both queries cannot hide.
    by_id = {r[0]: r for r in got}
    assert by_id[2][10] == "1500-03-01" and by_id[1][10] == "4713-01-01 BC"
    assert by_id[1][11] == "00:00:00.000001" and by_id[2][11] == "12:00:01.000001"
    assert by_id[1][12] == "12:00:01.000001+05:30" and by_id[2][8] == "abcde"
    assert by_id[1][15] == '{"a": [1, "x"], "b": null, "n": 1.50}'
    assert by_id[1][18] == "\\x00ff10" and by_id[1][19] == "1 year 2 mons"
    assert by_id[5][19:] == ("1 year 2 mons", "3 days 04:05:06.5")  # SQL-standard forms too
    if shim.protocol == "binary":
        assert shim.binary_columns > binary_before  # integers, floats, booleans, text
    again = pair.sync(job, source_url=shim.url())
    assert (again.updated, again.unchanged) == (0, 5)


def test_hllsketch_is_refused_naming_the_column_and_the_expression(
    pair: Pair, shim: RedshiftShim
) -> None:
    src = unique("sketch")
    x(
        pair.source,
        f"CREATE TABLE {src} (id int PRIMARY KEY, visitors redshift.hllsketch);"
        f""" INSERT INTO {src} VALUES (1, '{{"version":1,"logm":15,"sparse":{{"indices":[1],"values":[2]}}}}')""",
    )
    job = pair.job(name=src, table=f"public.{src}", target=f"public.{src}", key=["id"])
    with pytest.raises(SourceError) as err:
        pair.sync(job, source_url=shim.url())
    assert "column 'visitors' is HLLSKETCH" in err.value.message
    assert 'hll_cardinality("visitors") AS "visitors"' in err.value.message
    assert q(pair.target, "SELECT to_regclass($1)", f"public.{src}")[0][0] is None


def test_check_refuses_hllsketch_and_says_what_each_redshift_only_type_becomes(
    pair: Pair,
    shim: RedshiftShim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = unique("checked")
    x(pair.source, f"CREATE TABLE {src} (id int PRIMARY KEY, doc redshift.super,"
                   " shape redshift.geometry, sketch redshift.hllsketch)")  # fmt: skip
    config = tmp_path / "r2sf.toml"
    config.write_text(
        f'[[sync.jobs]]\nname = "whole"\ntable = "public.{src}"\ntarget = "public.a"\n'
        'key = ["id"]\n'
        f'[[sync.jobs]]\nname = "fixed"\nquery = "select id, doc, shape from {src}"\n'
        'target = "public.b"\nkey = ["id"]\n'
    )
    monkeypatch.delenv("R2SF_CONFIG", raising=False)
    monkeypatch.setenv("DATABASE_URL", pair.target)
    monkeypatch.setenv("REDSHIFT_URL", shim.url())
    monkeypatch.setenv("ODATA_CREDENTIALS", "sf:secret")
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "check"])
    out = capsys.readouterr().out
    assert exited.value.code == 1
    assert (
        "job     whole: FAILED column 'sketch' is HLLSKETCH, which PostgreSQL has no type for;"
        ' select hll_cardinality("sketch") AS "sketch" (the estimate) in the job\'s query'
    ) in out
    fixed = out.split("job     fixed: ", 1)[1].splitlines()
    assert fixed[0].startswith("3 column(s) ok, FETCH 1000 rows (node count unknown)")
    assert fixed[1:3] == [
        "          doc: SUPER -> jsonb",
        "          shape: GEOMETRY -> text (hex EWKB)",
    ]
