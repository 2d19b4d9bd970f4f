"""Behaviour of `odata.parser`: the forms Salesforce Connect sends, precedence, every literal
type with its Python value, and errors that name the problem and the position."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from typing import Literal as Lit

import pytest

from odata.ast import (
    Alias,
    BinaryOp,
    Call,
    In,
    KeyPredicate,
    LambdaExpr,
    ListExpr,
    Literal,
    OrderItem,
    PropertyPath,
    SearchBinary,
    SearchExpr,
    SearchNot,
    SearchTerm,
    SelectItem,
    TypeName,
    UnaryOp,
)
from odata.errors import NotImplementedFeature, QuerySyntaxError
from odata.parser import (
    MAX_DEPTH,
    parse_filter,
    parse_key,
    parse_literal,
    parse_orderby,
    parse_search,
    parse_select,
)


def p(*segments: str) -> PropertyPath:
    return PropertyPath(segments)


def s(text: str) -> Literal:
    return Literal(text, "Edm.String")


TRUE = Literal(True, "Edm.Boolean")
FALSE = Literal(False, "Edm.Boolean")
NULL = Literal(None, "null")


# --- the Salesforce forms (spec §2 and §10) --------------------------------------------------


def test_filter_contains_eq_true_is_a_comparison_of_a_call() -> None:
    assert parse_filter("contains(Name,'cm') eq true") == BinaryOp(
        "eq", Call("contains", (p("Name"), s("cm"))), TRUE
    )


def test_filter_startswith_eq_false_and_endswith() -> None:
    assert parse_filter("startswith(Name,'Ac') eq false") == BinaryOp(
        "eq", Call("startswith", (p("Name"), s("Ac"))), FALSE
    )
    assert parse_filter("endswith(Name,'me') eq true").left == Call(
        "endswith", (p("Name"), s("me"))
    )


def test_filter_not_with_space_before_parenthesis_negates_the_comparison() -> None:
    assert parse_filter("not (contains(Name,'test') eq true)") == UnaryOp(
        "not", BinaryOp("eq", Call("contains", (p("Name"), s("test"))), TRUE)
    )


def test_filter_or_chain_in_parentheses_and_boolean() -> None:
    got = parse_filter("(Region eq 'USA' or Region eq 'CA') and IsPaid eq false")
    assert got == BinaryOp(
        "and",
        BinaryOp(
            "or",
            BinaryOp("eq", p("Region"), s("USA")),
            BinaryOp("eq", p("Region"), s("CA")),
        ),
        BinaryOp("eq", p("IsPaid"), FALSE),
    )


def test_filter_date_range_with_unquoted_dates() -> None:
    got = parse_filter("SaleDate ge 2024-01-01 and SaleDate le 2024-12-31")
    assert got == BinaryOp(
        "and",
        BinaryOp("ge", p("SaleDate"), Literal(dt.date(2024, 1, 1), "Edm.Date")),
        BinaryOp("le", p("SaleDate"), Literal(dt.date(2024, 12, 31), "Edm.Date")),
    )


def test_filter_datetime_with_z_is_utc() -> None:
    got = parse_filter("ShippedAt lt 2024-06-30T23:59:59Z")
    assert got == BinaryOp(
        "lt",
        p("ShippedAt"),
        Literal(dt.datetime(2024, 6, 30, 23, 59, 59, tzinfo=dt.UTC), "Edm.DateTimeOffset"),
    )


def test_filter_null_comparisons() -> None:
    assert parse_filter("Notes eq null") == BinaryOp("eq", p("Notes"), NULL)
    assert parse_filter("Notes ne null") == BinaryOp("ne", p("Notes"), NULL)


def test_filter_integer_keys_joined_with_and() -> None:
    assert parse_filter("OrderID eq 10248 and LineNo eq 1") == BinaryOp(
        "and",
        BinaryOp("eq", p("OrderID"), Literal(10248, "Edm.Int32")),
        BinaryOp("eq", p("LineNo"), Literal(1, "Edm.Int32")),
    )


def test_filter_search_fallback_or_chain_of_contains() -> None:
    got = parse_filter("contains(Description,'Acme') eq true or contains(Name,'Acme') eq true")
    assert isinstance(got, BinaryOp) and got.op == "or"
    assert got.right == BinaryOp("eq", Call("contains", (p("Name"), s("Acme"))), TRUE)


def test_filter_doubled_quote_is_one_quote() -> None:
    assert parse_filter("Name eq 'O''Brien'") == BinaryOp("eq", p("Name"), s("O'Brien"))


def test_filter_tolerates_runs_of_blanks_and_tabs() -> None:
    assert parse_filter("  Region   eq\t 'USA'  ") == BinaryOp("eq", p("Region"), s("USA"))


def test_filter_quoted_date_stays_a_string_for_the_planner() -> None:
    assert parse_filter("D eq '2024-01-31'") == BinaryOp("eq", p("D"), s("2024-01-31"))


def test_filter_substringof_keeps_the_odata2_argument_order() -> None:
    assert parse_filter("substringof('x',Prop) eq true").left == Call(
        "substringof", (s("x"), p("Prop"))
    )


def test_filter_in_with_parenthesised_list() -> None:
    assert parse_filter("Id in ('a', 'b')") == In(p("Id"), (s("a"), s("b")))
    assert parse_filter("Id in ()") == In(p("Id"), ())


def test_filter_in_with_json_array() -> None:
    assert parse_filter("Id in [\"a\", 'b']") == In(p("Id"), (s("a"), s("b")))


def test_filter_in_list_of_non_literals_is_refused_at_the_comma() -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_filter("FirstName in (FirstName,LastName)")
    assert err.value.position == 23
    assert "literals" in err.value.message


# --- operators and precedence ------------------------------------------------------------------


def test_keywords_are_case_insensitive_as_the_abnf_says() -> None:
    assert parse_filter("Name EQ 'Milk' AND Price Lt 2") == BinaryOp(
        "and",
        BinaryOp("eq", p("Name"), s("Milk")),
        BinaryOp("lt", p("Price"), Literal(2, "Edm.Int32")),
    )
    assert parse_filter("X eq TRUE") == BinaryOp("eq", p("X"), TRUE)
    assert parse_filter("CONTAINS(A,'x')") == Call("contains", (p("A"), s("x")))


def test_null_is_case_sensitive_so_Null_is_a_property() -> None:
    assert parse_filter("X eq Null") == BinaryOp("eq", p("X"), p("Null"))


def test_and_binds_tighter_than_or() -> None:
    a, b, c = (BinaryOp("eq", p(n), TRUE) for n in "ABC")
    assert parse_filter("A eq true or B eq true and C eq true") == BinaryOp(
        "or", a, BinaryOp("and", b, c)
    )
    assert parse_filter("A eq true and B eq true or C eq true") == BinaryOp(
        "or", BinaryOp("and", a, b), c
    )


def test_not_binds_tighter_than_and() -> None:
    got = parse_filter("not A and B")
    assert got == BinaryOp("and", UnaryOp("not", p("A")), p("B"))


def test_multiplicative_binds_tighter_than_additive_and_both_than_comparison() -> None:
    one, two, three = (Literal(n, "Edm.Int32") for n in (1, 2, 3))
    assert parse_filter("A add 1 mul 2 gt 3") == BinaryOp(
        "gt", BinaryOp("add", p("A"), BinaryOp("mul", one, two)), three
    )


def test_arithmetic_is_left_associative() -> None:
    one, two = Literal(1, "Edm.Int32"), Literal(2, "Edm.Int32")
    assert parse_filter("A sub 1 sub 2") == BinaryOp("sub", BinaryOp("sub", p("A"), one), two)
    for op in ("div", "divby", "mod", "mul", "add"):
        assert parse_filter(f"A {op} 2") == BinaryOp(op, p("A"), two)


def test_relational_binds_tighter_than_equality() -> None:
    assert parse_filter("A lt B eq true") == BinaryOp("eq", BinaryOp("lt", p("A"), p("B")), TRUE)


def test_in_and_has_bind_tighter_than_not() -> None:
    assert parse_filter("not A in (1)") == UnaryOp("not", In(p("A"), (Literal(1, "Edm.Int32"),)))
    assert parse_filter("A has B") == BinaryOp("has", p("A"), p("B"))


def test_parentheses_override_precedence() -> None:
    got = parse_filter("(A or B) and C")
    assert got == BinaryOp("and", BinaryOp("or", p("A"), p("B")), p("C"))


def test_unary_minus_on_a_property_and_folded_into_a_literal() -> None:
    assert parse_filter("-Price") == UnaryOp("neg", p("Price"))
    assert parse_filter("A eq -5") == BinaryOp("eq", p("A"), Literal(-5, "Edm.Int32"))
    assert parse_filter("A eq - 5") == BinaryOp(
        "eq", p("A"), UnaryOp("neg", Literal(5, "Edm.Int32"))
    )


# --- paths, calls, lambdas, aliases ------------------------------------------------------------


def test_paths_aliases_and_type_names() -> None:
    assert parse_filter("Address/City eq @city") == BinaryOp(
        "eq", p("Address", "City"), Alias("city")
    )
    assert parse_filter("cast(X, Edm.String)") == Call("cast", (p("X"), TypeName("Edm.String")))
    assert parse_filter("isof(Edm.Int32)") == Call("isof", (TypeName("Edm.Int32"),))


def test_calls_with_zero_one_and_three_arguments() -> None:
    # Without the model `Items(1)` cannot be told from a call; the planner rejects unknown names.
    assert parse_filter("Items(1)") == Call("items", (Literal(1, "Edm.Int32"),))
    assert parse_filter("now()") == Call("now", ())
    assert parse_filter("length(Name) eq 3").left == Call("length", (p("Name"),))
    three = Call("substring", (p("N"), Literal(1, "Edm.Int32"), Literal(2, "Edm.Int32")))
    assert parse_filter("substring(N,1,2)") == three
    assert parse_filter("geo.distance(A,B)") == Call("geo.distance", (p("A"), p("B")))
    assert parse_filter("madeup(A)") == Call("madeup", (p("A"),))


def test_lambda_any_and_all() -> None:
    assert parse_filter("Orders/any(o:o/Amount gt 0)") == LambdaExpr(
        p("Orders"), "any", "o", BinaryOp("gt", p("o", "Amount"), Literal(0, "Edm.Int32"))
    )
    assert parse_filter("Tags/any()") == LambdaExpr(p("Tags"), "any", None, None)
    assert parse_filter("Tags/all( t : t eq 'x' )") == LambdaExpr(
        p("Tags"), "all", "t", BinaryOp("eq", p("t"), s("x"))
    )


def test_json_array_outside_in_is_a_list_expression() -> None:
    assert parse_filter('["a",1]') == ListExpr((s("a"), Literal(1, "Edm.Int32")))


@pytest.mark.parametrize(
    "text",
    [
        "$it/Name eq 'x'",
        "$root/People",
        "A/$count gt 0",
        "Price/@Measures.Currency eq 'EUR'",
        "style has Sales.Pattern'Yellow'",
        "geo.length(geography'SRID=0;LineString(1 1,2 2)')",
        'A eq {"x":1}',
        "Products/Model.BestProduct()",
        "Model.F(color='green')",
        "A eq 0000-01-01",
    ],
)
def test_valid_odata_the_service_refuses_is_501(text: str) -> None:
    with pytest.raises(NotImplementedFeature):
        parse_filter(text)


# --- literals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "edm_type"),
    [
        ("null", None, "null"),
        ("true", True, "Edm.Boolean"),
        ("False", False, "Edm.Boolean"),
        ("42", 42, "Edm.Int32"),
        ("+42", 42, "Edm.Int32"),
        ("-2147483648", -2147483648, "Edm.Int32"),
        ("2147483648", 2147483648, "Edm.Int64"),
        ("-9223372036854775808", -(2**63), "Edm.Int64"),
        ("9223372036854775808", decimal.Decimal(2**63), "Edm.Decimal"),
        ("3.10", decimal.Decimal("3.10"), "Edm.Decimal"),
        (
            "0.1000000000000000000000000000001",
            decimal.Decimal("0.1000000000000000000000000000001"),
            "Edm.Decimal",
        ),
        ("1.5e3", 1500.0, "Edm.Double"),
        ("-0.314E1", -3.14, "Edm.Double"),
        ("INF", math.inf, "Edm.Double"),
        ("-INF", -math.inf, "Edm.Double"),
        ("'O''Brien'", "O'Brien", "Edm.String"),
        ("''", "", "Edm.String"),
        ("2024-01-31", dt.date(2024, 1, 31), "Edm.Date"),
        ("2024-02-29", dt.date(2024, 2, 29), "Edm.Date"),
        ("2024-01-31T00:00:00Z", dt.datetime(2024, 1, 31, tzinfo=dt.UTC), "Edm.DateTimeOffset"),
        (
            "2024-01-31T10:20:30.1234567+05:30",
            dt.datetime(
                2024, 1, 31, 10, 20, 30, 123456, dt.timezone(dt.timedelta(hours=5, minutes=30))
            ),
            "Edm.DateTimeOffset",
        ),
        (
            "2024-01-31T10:20-08:00",
            dt.datetime(2024, 1, 31, 10, 20, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
            "Edm.DateTimeOffset",
        ),
        ("1972-06-30T23:59:60Z", dt.datetime(1972, 7, 1, tzinfo=dt.UTC), "Edm.DateTimeOffset"),
        ("13:20:00", dt.time(13, 20), "Edm.TimeOfDay"),
        ("13:20", dt.time(13, 20), "Edm.TimeOfDay"),
        ("13:20:01.5", dt.time(13, 20, 1, 500000), "Edm.TimeOfDay"),
        (
            "01234567-89ab-cdef-0123-456789ABCDEF",
            uuid.UUID("01234567-89ab-cdef-0123-456789abcdef"),
            "Edm.Guid",
        ),
        ("duration'P1DT2H'", dt.timedelta(days=1, hours=2), "Edm.Duration"),
        ("duration'-PT0.5S'", -dt.timedelta(seconds=0.5), "Edm.Duration"),
        ("binary'Zm9vYmFy'", b"foobar", "Edm.Binary"),
        ("binary'Zg'", b"f", "Edm.Binary"),
        ("binary'_-8='", b"\xff\xef", "Edm.Binary"),
        ("binary''", b"", "Edm.Binary"),
    ],
)
def test_literal_values_and_types(text: str, value: object, edm_type: str) -> None:
    got = parse_literal(text)
    assert got.edm_type == edm_type
    assert got.value == value
    assert type(got.value) is type(value)
    assert parse_filter(f"X eq {text}") == BinaryOp("eq", p("X"), got)


@pytest.mark.parametrize(
    ("text", "value", "edm_type"),
    [
        # OData 2.0 suffixes (the SAP Cloud SDK's default serializers still write them).
        ("100000L", 100000, "Edm.Int64"),
        ("100000l", 100000, "Edm.Int64"),
        ("-42L", -42, "Edm.Int64"),
        ("+7L", 7, "Edm.Int64"),
        ("9223372036854775807L", 2**63 - 1, "Edm.Int64"),
        ("2.5D", 2.5, "Edm.Double"),
        ("2.5d", 2.5, "Edm.Double"),
        ("3D", 3.0, "Edm.Double"),
        ("-1.5E3D", -1500.0, "Edm.Double"),
        ("1.5F", 1.5, "Edm.Single"),
        ("1.5f", 1.5, "Edm.Single"),
        ("0.1F", 0.10000000149011612, "Edm.Single"),  # the binary32 value a float holds
        ("10.0M", decimal.Decimal("10.0"), "Edm.Decimal"),
        ("10.0m", decimal.Decimal("10.0"), "Edm.Decimal"),
        ("-7M", decimal.Decimal("-7"), "Edm.Decimal"),
        ("0.1000000000000000000001M", decimal.Decimal("0.1000000000000000000001"), "Edm.Decimal"),
    ],
)
def test_number_type_suffixes_give_the_v4_literal_of_that_type(
    text: str, value: object, edm_type: str
) -> None:
    got = parse_literal(text)
    assert (got.value, got.edm_type, type(got.value)) == (value, edm_type, type(value))
    assert parse_filter(f"X eq {text}") == BinaryOp("eq", p("X"), got)
    assert parse_filter(f"X in ({text},1)") == In(p("X"), (got, Literal(1, "Edm.Int32")))
    assert parse_key(text) == KeyPredicate(((None, got),))
    assert parse_key(f"A={text},B=1L") == KeyPredicate((("A", got), ("B", Literal(1, "Edm.Int64"))))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2.5L", "the L suffix (Edm.Int64) needs a whole number; write 2.5 without it"),
        ("1e3L", "the L suffix (Edm.Int64) needs a whole number"),
        ("9223372036854775808L", "out of range for Edm.Int64"),
        ("1e39F", "out of range for Edm.Single"),
        ("1e309D", "out of range for Edm.Double"),
        ("1e131072M", "out of range for Edm.Decimal"),
        ("100LL", "malformed number '100LL'"),
        ("100Lx", "malformed number '100Lx'"),
        ("2.5DM", "malformed number '2.5DM'"),
        ("100x", "malformed number '100x'"),
    ],
)
def test_bad_suffixed_numbers_say_what_is_wrong_everywhere(text: str, message: str) -> None:
    for parse in (parse_literal, parse_key, lambda t: parse_filter(f"X eq {t}")):
        with pytest.raises(QuerySyntaxError, match=re.escape(message)):
            parse(text)


def test_nan_is_a_double() -> None:
    got = parse_literal("NaN")
    assert got.edm_type == "Edm.Double" and isinstance(got.value, float) and math.isnan(got.value)


@pytest.mark.parametrize(
    "text",
    [
        "2024-13-01",
        "2024-02-30",
        "2023-02-29",
        "2024-01-01T25:00:00Z",
        "2024-01-01T24:00Z",
        "2024-01-01T10:61Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00+25:00",
        "25:00:00",
        "12:60",
        "42.",
        ".5",
        "1e999",
        "1e2e3",
        "12abc",
        "duration'P1Y'",
        "duration'P'",
        "duration'PT'",
        "binary'Zm9v!'",
        "binary'Zh'",
        "X'1A'",
        "datetime'2024-01-01T00:00:00'",
        "'unterminated",
        "'a'b'",
        "9" * 101,
        "Name",
        "",
    ],
)
def test_invalid_literals_are_syntax_errors(text: str) -> None:
    with pytest.raises(QuerySyntaxError):
        parse_literal(text)


def test_datetime_without_zone_says_what_to_add() -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_filter("D lt 2024-01-01T00:00:00")
    assert "'Z'" in err.value.message and err.value.position == 5


def test_v2_datetime_prefix_points_to_the_v4_form() -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_filter("D lt datetime'2024-01-01T00:00:00'")
    assert "unquoted" in err.value.message


# --- errors name the problem and the place -----------------------------------------------------


def test_unclosed_parenthesis_names_where_it_was_opened() -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_filter("A eq (B eq 'x' or C")
    assert err.value.message == (
        "$filter: at position 19: expected ')' to close '(' opened at position 5, "
        "found end of input"
    )
    assert err.value.position == 19 and err.value.target == "$filter"


def test_unknown_operator_suggests_the_odata_one() -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_filter("Name equals 'x'")
    assert (
        err.value.message == "$filter: unknown operator 'equals' at position 5 (did you mean 'eq'?)"
    )
    with pytest.raises(QuerySyntaxError, match=r"'=' at position 5 \(did you mean 'eq'\?\)"):
        parse_filter("Name = 'x'")
    with pytest.raises(QuerySyntaxError, match=r"did you mean 'ne'"):
        parse_filter("Name != 'x'")
    with pytest.raises(QuerySyntaxError, match=r"did you mean 'and'"):
        parse_filter("A eq 1 adn B eq 2")


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        ("Name eq", 7),
        ("Name eq 'x", 8),
        ("A eq 1)", 6),
        ("contains(Name,'x' eq true", 25),
        ('A eq "x"', 5),
        ("any(x:x)", 3),
        ("Tags/all()", 9),
        ("A/", 2),
        ("A eq 1 2", 7),
        ("Model.Thing", 11),
        ("A eq #", 5),
        ("A eq (1,2)", 7),
    ],
)
def test_syntax_errors_carry_their_position(text: str, position: int) -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_filter(text)
    assert err.value.position == position
    assert err.value.message.startswith("$filter: ")
    assert f"position {position}" in err.value.message


def test_deep_nesting_is_refused_cleanly() -> None:
    for text in (
        "(" * (MAX_DEPTH + 1) + "A" + ")" * (MAX_DEPTH + 1),
        "not " * (MAX_DEPTH + 1) + "A",
        "A eq " + "-" * (MAX_DEPTH + 2) + "1",
        "f(" * (MAX_DEPTH + 1) + ")" * (MAX_DEPTH + 1),
        "[" * 5000,
        "(" * 100_000,
    ):
        with pytest.raises(QuerySyntaxError, match="nested deeper"):
            parse_filter(text)


def test_nesting_up_to_the_limit_parses() -> None:
    depth = MAX_DEPTH - 1
    assert parse_filter("(" * depth + "A" + ")" * depth) == p("A")


def test_long_or_chain_parses_without_recursion() -> None:
    text = " or ".join(f"Id eq '{i}'" for i in range(3000))
    got = parse_filter(text)
    assert isinstance(got, BinaryOp) and got.op == "or"
    assert got.right == BinaryOp("eq", p("Id"), s("2999"))


# --- $orderby, $select, $search, keys ----------------------------------------------------------


def test_orderby_items_and_directions() -> None:
    assert parse_orderby("Name desc, Id") == (
        OrderItem(p("Name"), True),
        OrderItem(p("Id"), False),
    )
    assert parse_orderby("A ASC,B/C DESC") == (OrderItem(p("A")), OrderItem(p("B", "C"), True))
    assert parse_orderby("length(Name) desc") == (OrderItem(Call("length", (p("Name"),)), True),)


@pytest.mark.parametrize("text", ["", "Name,", ",Name", "Name sideways", "Name desc desc"])
def test_orderby_errors(text: str) -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_orderby(text)
    assert err.value.target == "$orderby"


def test_select_items() -> None:
    assert parse_select("CategoryID,Name") == (SelectItem(("CategoryID",)), SelectItem(("Name",)))
    assert parse_select("*") == (SelectItem(("*",)),)
    assert parse_select("Address/City, Id") == (
        SelectItem(("Address", "City")),
        SelectItem(("Id",)),
    )


@pytest.mark.parametrize("text", ["", "A,", "A,,B", "A/", "1A", "A B", "A-B"])
def test_select_errors(text: str) -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_select(text)
    assert err.value.target == "$select"


def test_select_nested_options_are_501() -> None:
    with pytest.raises(NotImplementedFeature):
        parse_select("Address($select=City)")


def test_search_words_are_joined_by_implicit_and() -> None:
    assert parse_search("Sales Marketing") == SearchBinary(
        "and", SearchTerm("Sales"), SearchTerm("Marketing")
    )


def test_search_precedence_not_and_or() -> None:
    got = parse_search("a OR b AND NOT c")
    assert got == SearchBinary(
        "or", SearchTerm("a"), SearchBinary("and", SearchTerm("b"), SearchNot(SearchTerm("c")))
    )
    assert parse_search('("blue green" OR red)') == SearchBinary(
        "or", SearchTerm("blue green", phrase=True), SearchTerm("red")
    )


def test_search_lowercase_operators_are_words() -> None:
    assert parse_search("cats and dogs") == SearchBinary(
        "and", SearchBinary("and", SearchTerm("cats"), SearchTerm("and")), SearchTerm("dogs")
    )


def w(text: str) -> SearchTerm:
    return SearchTerm(text)


def both(op: Lit["and", "or"], left: SearchExpr, right: SearchExpr) -> SearchBinary:
    return SearchBinary(op, left, right)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Where an operand is expected, AND/OR are words (`$search=OR`: Oregon's state code).
        ("OR", w("OR")),
        ("AND", w("AND")),
        ("OR ELSE", both("and", w("OR"), w("ELSE"))),
        ("a OR OR b", both("or", w("a"), both("and", w("OR"), w("b")))),
        ("(OR)", w("OR")),
        # With nothing to apply to (alone, at the end, before ')'), NOT is a word too.
        ("NOT", w("NOT")),
        ("NOT NOT", SearchNot(w("NOT"))),
        ("a NOT", both("and", w("a"), w("NOT"))),
        ("(a NOT) b", both("and", both("and", w("a"), w("NOT")), w("b"))),
        # At the end, or before ')', AND/OR separate nothing: words.
        ("a OR", both("and", w("a"), w("OR"))),
        ("a AND", both("and", w("a"), w("AND"))),
        ("(a OR) b", both("and", both("and", w("a"), w("OR")), w("b"))),
        # The OASIS test cases: "match both AND and OR", "match AND or NOT".
        ("AND OR", both("and", w("AND"), w("OR"))),
        ("OR AND", both("and", w("OR"), w("AND"))),
        ("AND OR NOT", both("or", w("AND"), w("NOT"))),
        # Between operands they stay operators, whatever the operand is.
        ("a OR NOT", both("or", w("a"), w("NOT"))),
        ("NOT OR", SearchNot(w("OR"))),
        ("a AND NOT b", both("and", w("a"), SearchNot(w("b")))),
        ("OR OR OR", both("or", w("OR"), w("OR"))),
        # A quoted phrase is always a term.
        ('"OR"', SearchTerm("OR", phrase=True)),
        ('NOT "NOT"', SearchNot(SearchTerm("NOT", phrase=True))),
        (
            '"AND" OR "OR"',
            both("or", SearchTerm("AND", phrase=True), SearchTerm("OR", phrase=True)),
        ),
    ],
)
def test_search_keywords_where_no_operator_fits_are_search_words(
    text: str, expected: SearchExpr
) -> None:
    assert parse_search(text) == expected


def test_search_word_may_hold_a_decoded_semicolon() -> None:
    # `$search=a%3Bb` is valid (ABNF); after form-decoding the parser sees `a;b`.
    assert parse_search("a;b") == w("a;b")


def test_search_in_single_quotes_is_the_expression_inside() -> None:
    # ABNF `searchExpr-incomplete`: the value as a string literal, quotes doubled inside.
    assert parse_search("'blue OR green'") == both("or", w("blue"), w("green"))
    assert parse_search("'Daniel''s'") == w("Daniel's")
    assert parse_search("'\"big apple\"'") == SearchTerm("big apple", phrase=True)


@pytest.mark.parametrize("text", ["'\"blu'", "'('", '\'"blue" "green\'', "''"])
def test_incomplete_search_in_single_quotes_is_501(text: str) -> None:
    # Valid OData whose meaning URL Conventions leaves open: refused as not implemented.
    with pytest.raises(NotImplementedFeature) as err:
        parse_search(text)
    assert err.value.target == "$search"


@pytest.mark.parametrize(
    "text", ["", '"blue', '"blue"green', "(a", "a)", '""', "()", "(NOT", "NOT (", "a OR ("]
)
def test_search_errors(text: str) -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_search(text)
    assert err.value.target == "$search"


def test_keys_single_and_compound() -> None:
    assert parse_key("1") == KeyPredicate(((None, Literal(1, "Edm.Int32")),))
    assert parse_key("'S-0001'") == KeyPredicate(((None, s("S-0001")),))
    assert parse_key("OrderID=10248,LineNo=1") == KeyPredicate(
        (("OrderID", Literal(10248, "Edm.Int32")), ("LineNo", Literal(1, "Edm.Int32")))
    )
    assert parse_key("k=-1") == KeyPredicate((("k", Literal(-1, "Edm.Int32")),))


@pytest.mark.parametrize("text", ["", "a", "k1=1,", "k1=1,k1=2", "k1=", "1,2", "k1=1 k2=2", "k=A"])
def test_key_errors(text: str) -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_key(text)
    assert err.value.target == "key"
