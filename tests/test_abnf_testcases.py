"""The OASIS OData ABNF test cases for the rules `odata.parser` implements, run against it.

Positive cases must parse (NotImplementedFeature counts as accepted: the text is valid OData the
service refuses with 501). Negative cases (with `FailAt`) must raise QuerySyntaxError; a 501 is
not acceptable for them. Every case not run is listed in SKIPPED with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from odata.errors import NotImplementedFeature, QuerySyntaxError
from odata.parser import (
    parse_filter,
    parse_literal,
    parse_orderby,
    parse_search,
    parse_select,
)
from tests.abnf_report import record

SPEC_DIR = Path(__file__).resolve().parents[2] / "shared/spec/odata"
CASES_FILE = SPEC_DIR / "odata-abnf-testcases.yaml"

if not CASES_FILE.is_file():
    pytest.skip(f"OASIS ABNF test cases not found at {CASES_FILE}", allow_module_level=True)

yaml = pytest.importorskip("yaml")


def _option(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """The `filter`/`orderby`/... rules include `$name=`, the request layer's job: the harness
    checks it (case-insensitively, `$` optional, as the ABNF says) and parses the rest."""
    prefix = re.compile(rf"\$?{name}=", re.IGNORECASE)

    def run(text: str) -> Any:
        m = prefix.match(text)
        if m is None:
            raise QuerySyntaxError(f"not a ${name}= option", target=f"${name}", position=0)
        return parse(text[m.end() :])

    return run


def _any_expr(text: str) -> Any:
    # `anyExpr` is the part after `path/`; give it a path so it can stand as a filter.
    return parse_filter("Items/" + text)


def _json_string(text: str) -> Any:
    # `stringInUrl` only occurs inside JSON arrays and objects.
    return parse_filter("[" + text + "]")


def _duration_value(text: str) -> Any:
    return parse_literal(f"duration'{text}'")


def _typed(*edm_types: str) -> Callable[[str], Any]:
    """Literal rules name one type: a literal of another type fails the rule (`date` on `INF`)."""

    def run(text: str) -> Any:
        literal = parse_literal(text)
        if literal.edm_type not in edm_types:
            raise QuerySyntaxError(f"{literal.edm_type}, not {edm_types}", target="literal")
        return literal

    return run


INTEGER = ("Edm.Int32", "Edm.Int64")
NUMBER = ("Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double")
# Rule -> (parser, whether the input is URL text to percent-decode first). Payload rules
# (`...Value`) are not decoded: percent-encoding is an error there.
RULES: dict[str, tuple[Callable[[str], Any], bool]] = {
    "filter": (_option("filter", parse_filter), True),
    "boolCommonExpr": (parse_filter, True),
    "boolcommonExpr": (parse_filter, True),
    "commonExpr": (parse_filter, True),
    "notExpr": (parse_filter, True),
    "firstMemberExpr": (parse_filter, True),
    "propertyPathExpr": (parse_filter, True),
    "isofExpr": (parse_filter, True),
    "anyExpr": (_any_expr, True),
    "orderby": (_option("orderby", parse_orderby), True),
    "orderBy": (_option("orderby", parse_orderby), True),
    "select": (_option("select", parse_select), True),
    "search": (_option("search", parse_search), True),
    "searchExpr": (parse_search, True),
    "stringInUrl": (_json_string, True),
    "durationValue": (_duration_value, False),
    "primitiveLiteral": (parse_literal, True),
    "primitiveValue": (parse_literal, False),
    "enumLiteral": (parse_literal, True),
    "enumValue": (parse_literal, False),
    "binaryLiteral": (_typed("Edm.Binary"), True),
    "boolean": (_typed("Edm.Boolean"), True),
    "booleanValue": (_typed("Edm.Boolean"), False),
    "byteValue": (_typed(*INTEGER), False),
    "sbyteLiteral": (_typed(*INTEGER), True),
    "sbyteValue": (_typed(*INTEGER), False),
    "int16Literal": (_typed(*INTEGER), True),
    "int16Value": (_typed(*INTEGER), False),
    "int32Literal": (_typed(*INTEGER), True),
    "int32Value": (_typed(*INTEGER), False),
    "int64Literal": (_typed(*INTEGER), True),
    "int64Value": (_typed(*INTEGER), False),
    "decimalLiteral": (_typed(*NUMBER), True),
    "decimalValue": (_typed(*NUMBER), False),
    "doubleLiteral": (_typed(*NUMBER), True),
    "doubleValue": (_typed(*NUMBER), False),
    "singleLiteral": (_typed(*NUMBER), True),
    "singleValue": (_typed(*NUMBER), False),
    "date": (_typed("Edm.Date"), True),
    "dateValue": (_typed("Edm.Date"), False),
    "dateTimeOffsetLiteral": (_typed("Edm.DateTimeOffset"), True),
    "dateTimeOffsetValueInUrl": (_typed("Edm.DateTimeOffset"), True),
    "dateTimeOffsetValue": (_typed("Edm.DateTimeOffset"), False),
    "timeOfDayLiteral": (_typed("Edm.TimeOfDay"), True),
    "timeOfDayValue": (_typed("Edm.TimeOfDay"), False),
    # 4.01 allows the `duration` prefix to be left out; that is a String the planner coerces.
    "durationLiteral": (_typed("Edm.Duration", "Edm.String"), True),
    "guid": (_typed("Edm.Guid"), True),
    "null": (_typed("null"), True),
    "stringLiteral": (_typed("Edm.String"), True),
    # Only the cases that are one `$search` option (see ONLY_INPUTS): the keyword cases
    # (`$search=OR`, `NOT NOT`, `AND OR NOT`) and the single-quoted forms live there.
    "queryOptions": (_option("search", parse_search), True),
}
# Rules whose cases are run only when the input matches: the rest of `queryOptions` is the
# request layer's job (option names, `&` splitting), not a parser's.
ONLY_INPUTS: dict[str, re.Pattern[str]] = {"queryOptions": re.compile(r"\$?search=")}

# Case key: "Name [Input]" (names alone repeat). Every case of a rule above that is not run.
SKIPPED: dict[str, str] = {
    "5.1.1 Filter: no spaces [$filter= true]": (
        "deliberate leniency: blanks around a $filter value are ignored, since people type them "
        "in curl and they cannot change the meaning"
    ),
    "Boolean - payload values are lowercase [tRUe]": (
        "payload-only rule; parse_literal reads URL literals, where booleans are case-insensitive"
    ),
    "primitive value in request body - enumeration member [Yellow]": (
        "payload-only rule; enumeration types are not supported (and need the model)"
    ),
    "primitive value in request body - geo point [SRID=0;Point(142.1 64.1)]": (
        "payload-only rule; geo types are not supported"
    ),
    "primitive value in request body - binary [a123456789abcdefABA=]": (
        "payload-only rule: an unprefixed base64 value; in URLs binary needs binary'...'"
    ),
    "Enumeration value - multiple flag values [Solid,Yellow,+42]": (
        "payload-only rule; enumeration types are not supported (and need the model)"
    ),
    "5.1.7 Search - simple term with unencoded hash [$search=#1]": (
        "URL-level: an unencoded '#' starts the fragment, which clients never send to the server"
    ),
    "5.1.7 Search - simple term with unencoded ampersand [$search=more&more]": (
        "URL-level: the request layer splits the query string at '&' before $search is parsed"
    ),
    "5.1.7 Search - simple term with unencoded semicolon [$search=a;b]": (
        "deliberate deviation: a literal ';' is refused by the ABNF only so that nested $expand "
        "options can be split; once decoded it is the same text as the valid $search=a%3Bb, "
        "which must be accepted, and $expand is not supported"
    ),
}


def _load_cases() -> list[dict[str, str]]:
    # PyYAML rejects the tab inside one plain scalar (`Name<TAB>asc`), which YAML allows: swap
    # tabs for a private-use character and back. BaseLoader keeps every value a string (the
    # safe loader would turn `0000-01-01` into a date and fail).
    text = CASES_FILE.read_text(encoding="utf-8").replace("\t", "\ue000")
    data = yaml.load(text, Loader=yaml.BaseLoader)
    cases = []
    for case in data["TestCases"]:
        only = ONLY_INPUTS.get(case["Rule"])
        if case["Rule"] in RULES and (only is None or only.match(case["Input"])):
            cases.append(
                {k: v.replace("\ue000", "\t") for k, v in case.items() if isinstance(v, str)}
            )
    return cases


CASES = _load_cases()


def _key(case: dict[str, str]) -> str:
    return f"{case['Name']} [{case['Input']}]"


def test_every_skipped_case_exists() -> None:
    keys = {_key(c) for c in CASES}
    assert sorted(set(SKIPPED) - keys) == []


@pytest.mark.parametrize("case", CASES, ids=[f"{c['Rule']}:{_key(c)}" for c in CASES])
def test_abnf_case(case: dict[str, str]) -> None:
    rule = case["Rule"]
    key = _key(case)
    if key in SKIPPED:
        record(rule, "skipped")
        pytest.skip(SKIPPED[key])
    parse, url = RULES[rule]
    text = unquote(case["Input"]) if url else case["Input"]
    negative = "FailAt" in case
    outcome = "failed"
    try:
        if negative:
            with pytest.raises(QuerySyntaxError):
                parse(text)
        else:
            try:
                parse(text)
            except NotImplementedFeature:
                record(rule, "501")
        outcome = "passed"
    finally:
        record(rule, outcome)
