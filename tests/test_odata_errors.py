"""Error answers over real HTTP: OData JSON error bodies, statuses, stable codes and headers.

Every client mistake is a 4xx naming the problem (with a suggestion where one exists), valid
OData the service does not implement is a 501, and a server fault is a generic 5xx with a request
id that never carries SQL, a stack trace or the database password (in the body or in the log).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from service import logs
from tests.conftest import Databases, _admin, run
from tests.live import serve
from tests.odata_schema import SETUP_SQL, TOML

AUTH = ("sf", "secret")


def odata_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The `error` object of an OData JSON error response, after checking its framing."""
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["odata-version"] == "4.0"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "target", "details"}
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


# --- 400: the request is wrong ------------------------------------------------------------------


def test_unknown_property_in_filter_suggests_the_closest_name(client: httpx.Client) -> None:
    error = odata_error(client.get("/Sales", params={"$filter": "Regoin eq 'USA'"}), 400)
    assert error["code"] == "UnknownProperty"
    assert "did you mean 'Region'?" in error["message"]
    assert error["target"] == "Regoin"


@pytest.mark.parametrize(
    ("option", "text", "suggestion"),
    [
        ("$orderby", "Ammount desc", "Amount"),
        ("$select", "SaleID,Notez", "Notes"),
        ("$filter", "contains(notes,'x') eq true", "Notes"),  # names are case-sensitive
    ],
)
def test_unknown_property_in_other_options_suggests_the_closest_name(
    client: httpx.Client, option: str, text: str, suggestion: str
) -> None:
    error = odata_error(client.get("/Sales", params={option: text}), 400, "UnknownProperty")
    assert f"'{suggestion}'" in error["message"]


@pytest.mark.parametrize(
    ("set_name", "filter_"),
    [
        ("Sales", "Quantity eq 'x'"),
        ("Category", "Name gt 5"),
        ("Sales", "IsPaid eq 1"),
        ("Sales", "SaleDate eq 'yesterday'"),
        ("Sales", "Quantity add 'a' eq 1"),
        ("Sales", "length(Quantity) eq 1"),
        ("Sales", "Region"),  # not a boolean expression
        ("Sales", "Quantity eq 1 and 1"),
        ("typed", "guid eq 'not-a-guid'"),
        ("typed", "tod eq '25:00:00'"),
        ("Sales", "Quantity in (1, 'a')"),
    ],
)
def test_type_mismatch_is_400(client: httpx.Client, set_name: str, filter_: str) -> None:
    odata_error(client.get(f"/{set_name}", params={"$filter": filter_}), 400, "TypeMismatch")


@pytest.mark.parametrize(
    "filter_",
    [
        "SaleDate eq 2024-13-01",
        "SaleDate eq 2024-02-30",
        "ShippedAt lt 2024-06-30T25:00:00Z",
        "Amount eq 1e999",
        "Region eq 'unterminated",
        "Region eq",
        "(Region eq 'USA'",
        "Region eq 'USA')",
        "Region eq 'USA' and",
        "Region eq 'USA' xor true",
        "Amount eq 1..2",
    ],
)
def test_bad_literal_or_syntax_is_400_invalid_syntax(client: httpx.Client, filter_: str) -> None:
    error = odata_error(client.get("/Sales", params={"$filter": filter_}), 400, "InvalidSyntax")
    assert error["target"] == "$filter"


@pytest.mark.parametrize(
    "query",
    [
        "$top=-1",
        "$top=abc",
        "$top=1.5",
        "$top=99999999999999999999",
        "$top=",
        "$skip=-1",
        "$skip=abc",
        "$skip=99999999999999999999",
        "$count=maybe",
        "$count=",
        "$top=1&$top=2",
        "$filter=Quantity eq 1&$FILTER=Quantity eq 2",  # option names are case-insensitive
        "$top=1&top=2",  # 4.01: the `$` is optional, so this is the same option twice
        "$foo=1",
        "$filter=",
        "$filter=%20%20",
        "$orderby=",
        "$select=",
        "$search=",
        "$skiptoken=not-a-token",
    ],
)
def test_invalid_query_option_is_400(client: httpx.Client, query: str) -> None:
    error = odata_error(client.get("/Sales?" + query), 400, "InvalidQueryOption")
    assert error["target"].startswith("$")


def test_unknown_system_option_lists_the_supported_ones(client: httpx.Client) -> None:
    error = odata_error(client.get("/Sales?$foo=1"), 400, "InvalidQueryOption")
    assert "$filter" in error["message"] and "$top" in error["message"]


def test_custom_query_options_are_ignored(client: httpx.Client) -> None:
    r = client.get("/Sales?$top=1&foo=bar&sap-client=100")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "filter_",
    ["Quantity div 0 eq 1", "Quantity mod 0 eq 1", "Amount divby 0 gt 1", "Amount div 0 eq 1"],
)
def test_division_by_zero_is_400(client: httpx.Client, filter_: str) -> None:
    error = odata_error(client.get("/Sales", params={"$filter": filter_}), 400)
    assert error["message"] == "the query cannot be evaluated: it divides by zero"


@pytest.mark.parametrize("pattern", ["(", "[a-", "*x", "a{2,1}"])
def test_invalid_regex_in_matchespattern_is_400(client: httpx.Client, pattern: str) -> None:
    f = f"matchesPattern(Region,'{pattern}')"
    error = odata_error(client.get("/Sales", params={"$filter": f}), 400)
    assert error["message"].endswith("a pattern in it is not a valid pattern")


@pytest.mark.parametrize(
    "filter_",
    [
        "Quantity mul 2147483647 mul 2147483647 mul 4 gt 0",  # bigint overflow
        "substring(Region,99999999999) eq 'a'",
        "Region eq '\x00'",
    ],
)
def test_values_postgresql_cannot_evaluate_are_400(client: httpx.Client, filter_: str) -> None:
    error = odata_error(client.get("/Sales", params={"$filter": filter_}), 400)
    # In our words: PostgreSQL's names its types ("bigint", "integer") and its own phrasing.
    assert error["message"].startswith("the query cannot be evaluated: ")
    for leak in ("bigint", "integer", "invalid input", "out of range for type", "0x00"):
        assert leak not in error["message"]


def test_expression_nested_too_deeply_is_400(client: httpx.Client) -> None:
    deep = "(" * 3000 + "true" + ")" * 3000
    odata_error(client.get("/Sales", params={"$filter": deep}), 400)
    chain = "Quantity" + " add 1" * 3000 + " eq 1"  # left-deep, not parenthesised
    odata_error(client.get("/Sales", params={"$filter": chain}), 400)


def test_too_many_query_parameters_is_400(client: httpx.Client) -> None:
    odata_error(client.get("/Sales?" + "&".join(f"x{i}=1" for i in range(1500))), 400)


def test_query_string_that_is_not_utf8_is_400(server: str) -> None:
    r = httpx.get(server + "/odata/v4/Sales?$filter=Region%20eq%20%27%FF%27", auth=AUTH)
    odata_error(r, 400)


@pytest.mark.parametrize(
    "path",
    [
        "/Sales(1)",  # Int32 for a String key
        "/SalesLine(OrderID=10240)",  # half a composite key
        "/SalesLine(OrderID='a',LineNo=1)",
        "/SalesLine(Foo=1,Bar=2)",
        "/SalesLine(OrderID=10240,OrderID=1)",
        "/SalesLine(10240,1)",
        "/SalesLine/10240",
        "/Category(null)",
        "/Category/abc",
        "/Category()",
        "/Category(1)(2)",
        "/Sales('unbalanced)",
    ],
)
def test_malformed_key_is_400_with_target_key(client: httpx.Client, path: str) -> None:
    error = odata_error(client.get(path), 400)
    assert error["target"] == "key"


def test_parameter_alias_is_resolved(client: httpx.Client) -> None:
    r = client.get("/Category?$filter=CategoryID eq @id&@id=2")
    assert r.status_code == 200, r.text
    assert [v["CategoryID"] for v in r.json()["value"]] == [2]


def test_parameter_alias_without_a_value_is_400(client: httpx.Client) -> None:
    error = odata_error(client.get("/Category?$filter=CategoryID eq @id"), 400)
    assert "@id" in error["message"]


# --- 501: valid OData this service does not implement ------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "$expand=Category",
        "$apply=groupby((Region))",
        "$compute=Amount mul 2 as Twice",
        "$filter=Tags/any(t:t eq 'a')",
        "$filter=Tags/all(t:t eq 'a')",
        "$filter=Region has 'x'",
        "$filter=cast(Quantity,Edm.String) eq '1'",
        "$filter=isof(Quantity,Edm.Int32)",
        "$filter=geo.distance(A,B) lt 1",
        "$filter=geo.intersects(A,B)",
        "$select=Region/Code",
    ],
)
def test_valid_but_unsupported_is_501(client: httpx.Client, query: str) -> None:
    odata_error(client.get("/Sales?" + query), 501, "NotImplemented")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_batch_is_501(client: httpx.Client, method: str) -> None:
    odata_error(client.request(method, "/$batch"), 501, "NotImplemented")


# --- 404: nothing there --------------------------------------------------------------------------


def test_unknown_entity_set_is_404_with_a_suggestion(client: httpx.Client) -> None:
    error = odata_error(client.get("/Salez"), 404, "ResourceNotFound")
    assert "did you mean 'Sales'?" in error["message"]


def test_unknown_property_path_is_404(client: httpx.Client) -> None:
    error = odata_error(client.get("/Sales('S-0001')/Nottes"), 404)
    assert "'Notes'" in error["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/Category(1)/Name/Extra",
        "/Category(1)/Name/$value/x",
        "/Category(1)/$value",
        "/Category/$count/x",
        "/Category/$nope",
        "/$nope",
        "/Sales%20Table",
    ],
)
def test_unknown_path_is_404(client: httpx.Client, path: str) -> None:
    odata_error(client.get(path), 404)


@pytest.mark.parametrize(
    "path", ["/Sales('nope')", "/Category(424242)", "/SalesLine(OrderID=1,LineNo=1)", "/Sales/x"]
)
def test_missing_entity_is_404(client: httpx.Client, path: str) -> None:
    odata_error(client.get(path), 404, "EntityNotFound")


# --- 405, 406, 414, versions -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_write_to_metadata_is_405_with_allow(client: httpx.Client, method: str) -> None:
    r = client.request(method, "/$metadata", content=b"{}")
    odata_error(r, 405, "MethodNotAllowed")
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert "GET" in allowed and method not in allowed


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_write_to_a_view_entity_is_405(client: httpx.Client, method: str) -> None:
    r = client.request(
        method,
        "/region_totals('USA')",
        json={"total": 1},
        headers={"Content-Type": "application/json"},
    )
    odata_error(r, 405, "MethodNotAllowed")
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert "GET" in allowed and method not in allowed


def test_create_in_a_view_is_405(client: httpx.Client) -> None:
    r = client.post("/region_totals", json={"id": "X", "total": 1})
    odata_error(r, 405, "MethodNotAllowed")
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert "GET" in allowed and "POST" not in allowed


def test_view_still_answers_reads_after_refused_writes(client: httpx.Client) -> None:
    r = client.get("/region_totals('USA')")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/Sales", {"Accept": "application/xml"}),
        ("/Sales('S-0001')", {"Accept": "application/atom+xml"}),
        ("/Sales?$format=xml", {}),
        ("/Sales?$format=atom", {}),
        ("/?$format=xml", {}),
        ("/Sales", {"Accept": "application/json;odata.metadata=verbose"}),
    ],
)
def test_data_in_a_format_other_than_json_is_406(
    client: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    odata_error(client.get(path, headers=headers), 406, "NotAcceptable")


def test_metadata_is_xml_even_when_accept_asks_for_xml(client: httpx.Client) -> None:
    r = client.get("/$metadata", headers={"Accept": "application/xml"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")


def test_request_target_over_32_kb_is_414(client: httpx.Client) -> None:
    odata_error(client.get("/Sales", params={"$filter": "Region eq '" + "x" * 33_000 + "'"}), 414)
    odata_error(client.get("/" + "S" * 33_000), 414, "UriTooLong")


def test_30_kb_in_list_as_or_chain_is_answered(client: httpx.Client) -> None:
    # Salesforce writes IN as an `or` chain, spaces as `+` (form encoding).
    prefix = "/odata/v4/Sales?$select=SaleID&$count=true&$filter="
    terms: list[str] = []
    size = len(prefix)
    for i in range(1, 2601):
        term = f"SaleID+eq+'S-{i:04d}'"
        if size + len(term) + len("+or+") > 30 * 1024:
            break
        terms.append(term)
        size += len(term) + len("+or+")
    target = prefix + "+or+".join(terms)
    assert 29 * 1024 < len(target) <= 30 * 1024
    r = client.get(target.removeprefix("/odata/v4"))
    assert r.status_code == 200, r.text[:300]
    assert r.json()["@odata.count"] == len(terms)
    assert len(r.json()["value"]) == min(len(terms), 1000)  # page_size in TOML


@pytest.mark.parametrize("version", ["3.0", "2.0", "1.0"])
def test_odata_max_version_below_4_is_refused(client: httpx.Client, version: str) -> None:
    r = client.get("/Sales?$top=1", headers={"OData-MaxVersion": version})
    error = odata_error(r, 400, "BadRequest")
    assert "OData 4.0 service" in error["message"] and version in error["message"]


@pytest.mark.parametrize("version", ["4.0", "4.01", "4"])
def test_odata_max_version_4_is_served(client: httpx.Client, version: str) -> None:
    r = client.get("/Sales?$top=1", headers={"OData-MaxVersion": version})
    assert r.status_code == 200, r.text
    assert r.headers["odata-version"] == "4.0"


def test_unparseable_odata_max_version_is_400(client: httpx.Client) -> None:
    odata_error(client.get("/Sales?$top=1", headers={"OData-MaxVersion": "four"}), 400)


# --- authentication ------------------------------------------------------------------------------


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        _basic(b"sf:wrong"),
        _basic(b"other:secret"),
        _basic(b"sf:secret "),
        _basic(b"sf"),  # no colon
        _basic(b"\xff\xfe:\x00"),
        _basic("sf:sécret".encode()),
        "Basic !!!not-base64!!!",
        "Basic",
        "Bearer c2Y6c2VjcmV0",
        "Digest username=sf",
        "c2Y6c2VjcmV0",
    ],
)
@pytest.mark.parametrize("path", ["/odata/v4/Sales?$top=1", "/odata/v4/$metadata", "/"])
def test_missing_or_wrong_credentials_are_401_with_basic_challenge(
    server: str, authorization: str | None, path: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    r = httpx.get(server + path, headers=headers, timeout=30)
    error = odata_error(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"].startswith("Basic")
    assert "secret" not in error["message"]


def test_scheme_name_is_case_insensitive(server: str) -> None:
    r = httpx.get(
        server + "/odata/v4/Sales?$top=1", headers={"Authorization": "basic c2Y6c2VjcmV0"}
    )
    assert r.status_code == 200, r.text


def test_healthz_answers_without_credentials(server: str) -> None:
    r = httpx.get(server + "/healthz")
    assert r.status_code == 200
    assert r.text == "ok"


# --- every response --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/$metadata",
        "/Sales?$top=1",
        "/Sales/$count",
        "/Sales('S-0001')/Region/$value",
        "/Sales?$filter=Regoin eq 1",
        "/Salez",
        "/Sales?$expand=X",
    ],
)
def test_every_odata_response_carries_odata_version_4_0(client: httpx.Client, path: str) -> None:
    assert client.get(path).headers["odata-version"] == "4.0"


def test_request_id_is_echoed(client: httpx.Client) -> None:
    r = client.get("/Salez", headers={"X-Request-Id": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"


# --- server faults -------------------------------------------------------------------------------

PASSWORD = "Pa55-w0rd-never-shown"


def _with_password(url: str) -> str:
    """The same database URL carrying a password (the test server trusts local connections,
    so the password is never checked, only carried around where it could leak)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


def _drop(server_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_database_gone_is_a_generic_5xx_with_request_id_and_no_secrets(
    databases: Databases, server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = _with_password(databases.create(SETUP_SQL))
    caplog.set_level(logging.DEBUG)
    lines = io.StringIO()
    json_log = logs.handler(lines, json_lines=True)  # what `r2sf serve` writes on a dyno
    logging.getLogger().addHandler(json_log)
    with (
        serve(url, TOML) as (base, _app),
        httpx.Client(auth=AUTH, timeout=30) as c,
        contextlib.ExitStack() as cleanup,
    ):
        cleanup.callback(logging.getLogger().removeHandler, json_log)
        assert c.get(base + "/odata/v4/Category?$top=1").status_code == 200
        _drop(server_url, url)
        paths = [
            "/odata/v4/Category?$filter=Name eq 'x'&$count=true",
            "/odata/v4/Category(1)",
            "/odata/v4/Category/$count",
            "/odata/v4/Sales?$top=5",
        ]
        for path in paths:
            r = c.get(base + path, headers={"X-Request-Id": f"fault-{len(path)}"})
            # 503 when the connection broke, 500 when PostgreSQL refused the database by name.
            assert r.status_code in (500, 503), (path, r.status_code, r.text)
            code = {500: "InternalError", 503: "ServiceUnavailable"}[r.status_code]
            error = odata_error(r, r.status_code, code)
            assert error["details"] == [{"code": "RequestId", "message": f"fault-{len(path)}"}]
            text = r.text.lower()
            for leak in (PASSWORD.lower(), "select", "traceback", "asyncpg", "postgres", " from "):
                assert leak not in text, (leak, r.text)
        # $metadata is served from memory: still fine while the database is away.
        assert c.get(base + "/odata/v4/$metadata").status_code == 200
    assert PASSWORD not in caplog.text
    # Each failure is logged with the request id the client got back, and no secret.
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    failures = [r for r in records if r["level"] == "error"]
    assert {r.get("request_id") for r in failures} == {f"fault-{len(p)}" for p in paths}
    assert PASSWORD not in lines.getvalue()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_start_up_against_a_missing_database_never_logs_the_password(
    databases: Databases, server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = _with_password(databases.create())
    _drop(server_url, url)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuntimeError), serve(url, TOML):
        pass
    assert "DATABASE_URL" in caplog.text  # the failure is explained...
    assert PASSWORD not in caplog.text  # ...without the secret


def test_orderby_with_too_many_items_is_400_and_fast(client: httpx.Client) -> None:
    many = ",".join(f"length(Region) add {i}" for i in range(1000))
    r = client.get("/Sales", params={"$orderby": many}, timeout=10)
    odata_error(r, 400, "InvalidQueryOption")
    few = ",".join(["Region desc", "Amount", "length(Notes)", "SaleDate desc"] * 8)
    assert client.get("/Sales", params={"$orderby": few, "$top": 5}).status_code == 200


def test_views_allow_only_get_and_head_on_every_path(client: httpx.Client) -> None:
    for method, url in [
        ("POST", "/region_totals"),
        ("PATCH", "/region_totals('USA')"),
        ("POST", "/region_totals('USA')"),
    ]:
        r = client.request(method, url, json={})
        assert r.status_code == 405, (method, url, r.text)
        assert r.headers["Allow"] == "GET, HEAD"


def test_datetime_beyond_year_9999_in_utc_is_a_clean_400(client: httpx.Client) -> None:
    r = client.get("/Sales?$filter=ShippedAt gt 9999-12-31T23:59:59-14:00")
    assert r.status_code == 400
    assert "datetime.datetime" not in r.text and "$1" not in r.text
