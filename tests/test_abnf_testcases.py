"""The OASIS OData ABNF test cases (vendored in tests/spec/odata/), run against odata/.

Rules `odata.parser` implements run through it: positive cases must parse (NotImplementedFeature
counts as accepted: the text is valid OData the service refuses with 501), negative cases (with
`FailAt`) must raise QuerySyntaxError. Rules that are a whole request URL or query string run
through `odata.request` (`REQUEST_RULES`). Every case not run, or not coming out as the ABNF
says, is listed with its reason: one case in SKIPPED, a kind of input in REQUEST_DEVIATIONS, a
whole rule in RULES_NOT_RUN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from odata.errors import NotImplementedFeature, ODataError, QuerySyntaxError
from odata.parser import (
    parse_filter,
    parse_literal,
    parse_orderby,
    parse_search,
    parse_select,
)
from odata.request import parse_path, parse_query
from tests.abnf_report import record

SPEC_DIR = Path(__file__).resolve().parent / "spec" / "odata"  # vendored: tests/spec/README.md
CASES_FILE = SPEC_DIR / "odata-abnf-testcases.yaml"


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
        cases.append({k: v.replace("\ue000", "\t") for k, v in case.items() if isinstance(v, str)})
    return cases


ALL_CASES = _load_cases()


def _parser_case(case: dict[str, str]) -> bool:
    only = ONLY_INPUTS.get(case["Rule"])
    return case["Rule"] in RULES and (only is None or only.match(case["Input"]) is not None)


CASES = [c for c in ALL_CASES if _parser_case(c)]


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


# -- whole request URLs, through odata/request.py -------------------------------------------------

# Rules whose inputs are a request URL (or its query part): run through `parse_path` and
# `parse_query`, which turn them into a Resource and QueryOptions without the model. Positive
# cases must parse (or be refused as not implemented, 501); negative cases must be refused.
REQUEST_RULES: dict[str, str] = {
    "odataRelativeUri": "",  # `path?query` below the service root
    "resourcePath": "",
    "entitySetName": "",
    "queryOptions": "?",  # the query part alone (its $search cases run above)
    "systemQueryOption": "?",
    "customQueryOption": "?",
    "skiptoken": "?",
    "deltatoken": "?",
}

# Why a request case does not come out as the ABNF says, by what its input uses (first match).
# Most are OData features this service does not have: its model is flat tables and views (no
# navigation, complex or collection properties, functions or actions), which is all Salesforce
# Connect's adapter needs; such paths are a 404 ("no such resource") rather than a 501.
REQUEST_DEVIATIONS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^\$entity"),
        "$entity is answered 501 (not implemented) before its options are checked",
    ),
    (
        re.compile(r"\$expand="),
        "$expand is answered 501 (not implemented) before its value is parsed",
    ),
    (
        re.compile(r"\$index="),
        "$index is answered 501 (not implemented) before its value is checked",
    ),
    (re.compile(r"\$ref\b"), "$ref (entity references): no navigation properties, so 404"),
    (re.compile(r"/\$query\b"), "/$query (queries in a POST body): not supported, 404"),
    (
        re.compile(r"/\$filter\(|/\$each\b"),
        "path-segment $filter and $each (4.01): not supported, 404",
    ),
    (re.compile(r"^\$crossjoin"), "$crossjoin: not supported (it is refused as such, 501, or 404)"),
    (re.compile(r"^\$metadata#"), "URL-level: '#' starts the fragment, which clients never send"),
    (
        re.compile(r"@\w+=[\[{]|@\w+=\$root|@\w+=\w+\.\w+\(|@expression="),
        "parameter aliases holding JSON, $root paths or expressions: only literals are supported",
    ),
    (re.compile(r"^\w+\((\w+=)?@\w+\)"), "parameter aliases as key values: keys are literals"),
    (
        re.compile(r"^[A-Za-z]\w*\([^)]*\)(\(|/|\?|$)(?<!\d\))"),
        "function imports: the model has no functions, so the name is no entity set (404, or 400 for"
        " parameters that are no key)",
    ),
    (
        re.compile(r"/(\w+\.)+\w+|/\w+\(|\)/\w+/"),
        "navigation, complex and collection properties, functions, actions and type casts below an"
        " entity: the model has only primitive properties (404)",
    ),
    (
        re.compile(r"^\w+/\d+/\d+|^\w+/\w+/\w+"),
        "key-as-segment with a multi-part key, or a singleton: not supported (404)",
    ),
    (re.compile(r"\w+\(\d+\)/\$value$"), "media entities (/$value of an entity): not supported"),
    (
        re.compile(r"/\w+/\$value$"),
        "model-dependent: whether /$value applies depends on the property's type, which the plan"
        " stage checks with the model (it answers 400 or 404 there)",
    ),
    (
        re.compile(r"^\w+/\w+\(\)$"),
        "key-as-segment: 'TheBestProduct()' reads as a string key; looking it up answers 404",
    ),
    (
        re.compile(r"\$format=\w+&\$Format=|\$format=JSON&\$format="),
        "deliberate: a system query option given twice is refused (400, InvalidQueryOption) rather"
        " than one of its values silently chosen",
    ),
    (
        re.compile(r"^\?\$skiptoken=Not&this"),
        "URL-level: the query splits at '&', leaving a custom option 'this'; a skiptoken is opaque"
        " and checked when it is used (400 for one the service did not issue)",
    ),
]

# Rules not run at all, each with the reason. Every rule of the corpus is in RULES,
# REQUEST_RULES or here (test_every_rule_is_run_or_listed).
RULES_NOT_RUN: dict[str, str] = {
    "context": "context URLs are what responses carry (odata/response.py builds them), not input",
    "preference": "Prefer header values: only odata.maxpagesize, return= and odata.track-changes"
    " are read, by substring, and anything else is ignored as RFC 7240 asks",
    "prefer": "as preference",
    "includeAnnotationsPreference": "as preference",
    "maxpagesizePreference": "as preference",
    "header": "HTTP header syntax is the ASGI server's job; the service reads a few headers",
    "request-id": "X-Request-ID is echoed, never parsed",
    "expand": "$expand is not supported: every value is answered 501 (not implemented)",
    "compute": "$compute is not supported: every value is answered 501 (not implemented)",
    "odataUri": "absolute URLs: the service sees only the path below its root; the same"
    " resources are the odataRelativeUri cases, which run",
    "odataIdentifier": "identifier charset: the model's names come from odata/naming.py, which"
    " produces only names Salesforce accepts (tests/test_naming.py)",
    "functionParameter": "functions are not supported",
    "geographyPoint": "geo types are not supported",
    "geographyMultiPoint": "geo types are not supported",
    "geometryMultiPoint": "geo types are not supported",
    "geographyCollection": "geo types are not supported",
    "geographyLineString": "geo types are not supported",
    "geographyMultiLineString": "geo types are not supported",
    "geographyMultiPolygon": "geo types are not supported",
    "geographyPolygon": "geo types are not supported",
    "geometryCollection": "geo types are not supported",
    "geometryLineString": "geo types are not supported",
    "geometryMultiLineString": "geo types are not supported",
    "geometryMultiPolygon": "geo types are not supported",
    "geometryPoint": "geo types are not supported",
    "geometryPolygon": "geo types are not supported",
}

REQUEST_CASES = [c for c in ALL_CASES if c["Rule"] in REQUEST_RULES and not _parser_case(c)]


def _request(text: str) -> None:
    path, _, query = text.partition("?")
    parse_path(path)
    parse_query(query)


def _deviation(text: str) -> str | None:
    return next((why for pattern, why in REQUEST_DEVIATIONS if pattern.search(text)), None)


def test_every_rule_is_run_or_listed() -> None:
    rules = {c["Rule"] for c in ALL_CASES}
    unlisted = rules - set(RULES) - set(REQUEST_RULES) - set(RULES_NOT_RUN)
    assert sorted(unlisted) == []
    assert sorted(set(RULES_NOT_RUN) - rules) == []  # no reason left for a rule that is gone
    run = len(CASES) + len(REQUEST_CASES)
    not_run = sum(c["Rule"] in RULES_NOT_RUN for c in ALL_CASES)
    assert run + not_run == len(ALL_CASES)


@pytest.mark.parametrize(
    "case", REQUEST_CASES, ids=[f"{c['Rule']}:{_key(c)}" for c in REQUEST_CASES]
)
def test_abnf_request_case(case: dict[str, str]) -> None:
    rule = case["Rule"]
    text = REQUEST_RULES[rule] + case["Input"]
    negative = "FailAt" in case
    try:
        _request(text)
        refused = False
    except NotImplementedFeature:
        refused = negative  # 501 accepts a valid request; it is no answer to an invalid one
    except ODataError:
        refused = True
    if refused == negative:
        record(rule, "passed")
        return
    why = _deviation(text)
    record(rule, "skipped" if why else "failed")
    assert why is not None, f"{'accepted' if refused is False else 'refused'}: {text}"
    pytest.skip(why)


def test_every_request_deviation_is_used() -> None:
    # A reason no input matches any more is stale: the case it excused now passes, or is gone.
    texts = [REQUEST_RULES[c["Rule"]] + c["Input"] for c in REQUEST_CASES]
    unused = [p.pattern for p, _ in REQUEST_DEVIATIONS if not any(p.search(t) for t in texts)]
    assert unused == []
