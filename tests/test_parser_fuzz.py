"""Random and mutated query option text: the parser raises only QuerySyntaxError (400) or
NotImplementedFeature (501), never anything that would become a 500."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from odata.errors import NotImplementedFeature, QuerySyntaxError
from odata.parser import (
    parse_filter,
    parse_key,
    parse_literal,
    parse_orderby,
    parse_search,
    parse_select,
)

PARSERS: list[Callable[[str], Any]] = [
    parse_filter,
    parse_orderby,
    parse_select,
    parse_search,
    parse_key,
    parse_literal,
]

VALID = [
    "contains(Name,'cm') eq true",
    "not (contains(Name,'test') eq true)",
    "(Region eq 'USA' or Region eq 'CA') and IsPaid eq false",
    "SaleDate ge 2024-01-01 and SaleDate le 2024-12-31",
    "ShippedAt lt 2024-06-30T23:59:59.123+02:00",
    "Notes eq null",
    "Name eq 'O''Brien'",
    "Id in ('a','b') and X eq 01234567-89ab-cdef-0123-456789abcdef",
    "Price mul 2 add -3.5 gt 1.5e3",
    "Orders/any(o:o/Amount gt 0)",
    "cast(X,Edm.String) eq duration'P1DT2H' or B eq binary'Zm9v'",
    "T eq 13:20:00 and N eq -INF",
    "Name desc, Id",
    "A,B/C,*",
    '("blue green" OR red) AND NOT x',
    "OrderID=10248,LineNo=1",
]

# Characters that mean something to the tokenizer, weighted toward trouble.
ALPHABET = st.sampled_from(
    [*list("()[]{}'\",/:=-+.@$ \t0123456789eEINFTZaAndorPDHMS"), "\x00", "é"]
)


def _check(text: str) -> None:
    for parse in PARSERS:
        with contextlib.suppress(QuerySyntaxError, NotImplementedFeature):
            parse(text)


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=60))
def test_random_unicode_text_raises_only_odata_errors(text: str) -> None:
    _check(text)


@settings(deadline=None, max_examples=300)
@given(st.text(ALPHABET, max_size=60))
def test_random_syntax_soup_raises_only_odata_errors(text: str) -> None:
    _check(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        action = draw(st.sampled_from(["drop", "dup", "insert", "swap"]))
        if action == "drop":
            text = text[:i] + text[i + 1 :]
        elif action == "dup":
            text = text[:i] + text[i] + text[i:]
        elif action == "insert":
            text = text[:i] + draw(ALPHABET) + text[i:]
        else:
            text = text[:i] + text[i + 1 : i + 2] + text[i : i + 1] + text[i + 2 :]
    return text


@settings(deadline=None, max_examples=400)
@given(mutated())
def test_mutated_valid_expressions_raise_only_odata_errors(text: str) -> None:
    _check(text)


@settings(deadline=None, max_examples=100)
@given(
    st.sampled_from(["(", "not ", "-", "[", "f(", "A/any(x:", '"', "'", "NOT ", "(a OR "]),
    st.integers(0, 3000),
    st.sampled_from(["", "A", "1", ")", "]"]),
)
def test_deep_and_unbalanced_nesting_raises_only_odata_errors(
    opener: str, depth: int, tail: str
) -> None:
    _check(opener * depth + tail)


@settings(deadline=None, max_examples=200)
@given(
    st.from_regex(
        r"-?[0-9]{1,400}(\.[0-9]{0,50})?([eE][+-]?[0-9]{1,6})?[LlDdFfMm]?"
        r"|-?[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}(T[0-9:.]{0,20}(Z|[+-][0-9:]{0,6})?)?"
        r"|[0-9]{1,3}:[0-9:.]{0,20}"
        r"|(duration|binary)'[-A-Za-z0-9.=_]{0,30}'",
        fullmatch=True,
    )
)
def test_huge_and_malformed_literals_raise_only_odata_errors(text: str) -> None:
    _check(text)
    _check(f"A eq {text}")
