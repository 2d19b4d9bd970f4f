"""How values cross from the driver to the target: every type is read as text except the ones
whose binary decoder is proven exact here, on byte strings in the cluster's wire format; and
the driver internals sync/redshift.py reads are still where it expects them."""

from __future__ import annotations

import math
import struct
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redshift_connector
from packaging.requirements import Requirement
from redshift_connector.config import FC_BINARY, FC_TEXT
from redshift_connector.utils import type_utils

from sync import redshift
from tests.conftest import Databases, run
from tests.redshift_shim import RedshiftShim
from tests.test_sync_support import fetch

# (OID, type name, struct format) of every type kept binary; text types are their UTF-8 bytes.
BINARY_NUMBERS = [
    (21, "int2", ">h"), (23, "int4", ">i"), (20, "int8", ">q"),
    (700, "float4", ">f"), (701, "float8", ">d"),
]  # fmt: skip
INT_EDGES = {
    "int2": [-32768, -1, 0, 1, 32767],
    "int4": [-2147483648, -1, 0, 7, 2147483647],
    "int8": [-(2**63), -1, 0, 2**53 + 1, 2**63 - 1],
}
# Bit patterns, so NaN, -0.0, infinities, subnormals and the extremes are all covered.
FLOAT_BITS = {
    "float4": [0x00000000, 0x80000000, 0x3F8CCCCD, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001,
               0x007FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x3DCCCCCD],
    "float8": [0x0, 0x8000000000000000, 0x3FB999999999999A, 0x7FEFFFFFFFFFFFFF,
               0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x7FF0000000000000,
               0xFFF0000000000000, 0x7FF8000000000000, 0x3FF0000000000001],
}  # fmt: skip


def _wire(fmt: str, name: str) -> list[bytes]:
    if name in INT_EDGES:
        return [struct.pack(fmt, v) for v in INT_EDGES[name]]
    width = struct.calcsize(fmt)
    return [b.to_bytes(width, "big") for b in FLOAT_BITS[name]]


def _through_csv(decoder: Callable[..., Any], oid: int, data: bytes) -> str:
    """The COPY CSV field the extract process writes for these wire bytes."""
    value = decoder(data, 0, len(data))
    encoded = redshift.CsvEncoder([redshift.value_encoder(oid)]).encode([[value]])
    return encoded.decode().rstrip("\n").strip('"')


async def _send_back(url: str, type_name: str, texts: list[str]) -> list[bytes]:
    """PostgreSQL's binary send of each text read by the type's input function."""
    rows = await fetch(
        url, f"SELECT {type_name}send(CAST(v AS {type_name})) FROM unnest($1::text[]) v", texts
    )
    return [bytes(r[0]) for r in rows]


@pytest.mark.parametrize(("oid", "name", "fmt"), BINARY_NUMBERS)
def test_binary_numbers_reach_the_target_bit_for_bit(
    databases: Databases, oid: int, name: str, fmt: str
) -> None:
    url = databases.create()
    fc, decoder = type_utils.redshift_types[oid]
    assert fc == FC_BINARY
    wire = _wire(fmt, name)
    texts = [_through_csv(decoder, oid, w) for w in wire]
    # NaN has one canonical form in PostgreSQL; every other value must come back bit for bit.
    got = run(_send_back(url, name, texts))
    for w, g, t in zip(wire, got, texts, strict=True):
        value = struct.unpack(fmt, w)[0]
        if isinstance(value, float) and math.isnan(value):
            assert t.lower() == "nan"
        else:
            assert g == w, f"{name} {w.hex()} -> CSV {t!r} -> {g.hex()}"


def test_binary_booleans_and_text_reach_the_target_unchanged(databases: Databases) -> None:
    url = databases.create()
    _, bool_recv = type_utils.redshift_types[16]
    assert [_through_csv(bool_recv, 16, b) for b in (b"\x01", b"\x00")] == ["True", "False"]
    assert run(_send_back(url, "bool", ["True", "False"])) == [b"\x01", b"\x00"]
    _, text_recv = type_utils.redshift_types[1043]
    raw = "a\"b,c\n'ü✓\\x\t".encode()
    assert _through_csv(text_recv, 1043, raw).replace('""', '"') == raw.decode()


@pytest.fixture(scope="module")
def binary_connection(databases: Databases) -> Iterator[Any]:
    url = databases.create()
    with RedshiftShim(url, protocol="binary") as shim:
        conn = redshift_connector.connect(
            host=shim.host, port=shim.port, user="postgres", password="unused", ssl=False,
            database=urlsplit(url).path.lstrip("/"),
        )  # fmt: skip
        try:
            yield conn
        finally:
            conn.close()


def test_the_cluster_protocol_was_negotiated_and_every_other_type_is_read_as_text(
    binary_connection: Any,
) -> None:
    conn = binary_connection
    assert conn._client_protocol_version == 2
    # As negotiated, the driver would decode these in binary (its inexact decoders among them).
    for oid in (1700, 1082, 1083, 1266, 1114, 1184, 1186, 1188, 1190, 3001):
        assert conn.redshift_types[oid][0] == FC_BINARY
    redshift.use_exact_transport(conn)
    binary = {oid for oid, (fc, _) in conn.redshift_types.items() if fc != FC_TEXT}
    assert binary <= redshift.BINARY_EXACT
    for oid in (1700, 1082, 1083, 1266, 1114, 1184, 1186, 1188, 1190, 3001, 6551, 4000, 3000):
        assert conn.redshift_types[oid] == (FC_TEXT, type_utils.text_recv)
    assert conn.redshift_types[987654] == (FC_TEXT, type_utils.text_recv)  # unknown: text


def test_the_driver_internals_the_extract_reads_are_unchanged() -> None:
    problems = redshift.driver_problems()
    assert problems == [], (
        "redshift_connector changed what sync/redshift.py relies on: "
        + "; ".join(problems)
        + ". Check sync/redshift.py against the new version before widening the pin."
    )


def test_the_installed_driver_is_in_the_tested_range_of_pyproject() -> None:
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    (spec,) = [
        Requirement(d) for d in pyproject["project"]["dependencies"]
        if d.startswith("redshift-connector")
    ]  # fmt: skip
    assert spec.specifier, "pin redshift-connector to a tested range in pyproject.toml"
    assert redshift_connector.__version__ in spec.specifier, (
        f"redshift_connector {redshift_connector.__version__} is outside the tested range"
        f" {spec.specifier}: run tests/test_redshift_transport.py and tests/test_redshift_types.py"
        " against it, then update the pin"
    )
