"""HTTP Basic authentication: every configured credential works, nothing else does, and no
malformed Authorization header gets further than a 401."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from service.auth import BasicAuth
from service.config import parse_credentials
from tests.conftest import Databases
from tests.live import serve

CREDENTIALS = "sf:first, rotated:second ,colons:a:b:c,unicode:pässwörd"
VALID = [("sf", "first"), ("rotated", "second"), ("colons", "a:b:c"), ("unicode", "pässwörd")]


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def base(databases: Databases) -> Iterator[str]:
    url = databases.create("create table t (id int primary key); insert into t values (1);")
    with serve(url, "[odata]\nexpose = ['public.*']\n", credentials=CREDENTIALS) as (b, _app):
        yield b


@pytest.mark.parametrize(("user", "password"), VALID)
def test_every_configured_credential_is_accepted(base: str, user: str, password: str) -> None:
    r = httpx.get(base + "/odata/v4/t", headers={"Authorization": header(user, password)})
    assert r.status_code == 200, r.text
    assert r.json()["value"] == [{"id": 1}]


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("sf", "second"),  # another user's password
        ("rotated", "first"),
        ("colons", "a"),
        ("colons", "a:b"),
        ("unicode", "passwort"),
        ("SF", "first"),  # user names are case-sensitive
        ("sf", "first "),
        (" sf", "first"),
        ("", ""),
    ],
)
def test_mixed_or_altered_credentials_are_refused(base: str, user: str, password: str) -> None:
    r = httpx.get(base + "/odata/v4/t", headers={"Authorization": header(user, password)})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["error"]["code"] == "Unauthorized"


def test_unicode_password_sent_as_latin1_is_refused(base: str) -> None:
    raw = base64.b64encode("unicode:pässwörd".encode("latin-1")).decode()
    r = httpx.get(base + "/odata/v4/t", headers={"Authorization": "Basic " + raw})
    assert r.status_code == 401


def test_rotation_both_old_and_new_credentials_work_at_once() -> None:
    auth = BasicAuth(parse_credentials("sf:old,sf:new"))
    assert auth.user(header("sf", "old")) == "sf"
    assert auth.user(header("sf", "new")) == "sf"
    assert auth.user(header("sf", "other")) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Basic ====",
        "Basic %%%",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe\x00:\x00").decode(),
        "Basic " + "A" * 10_000,
        "Bearer eyJhbGciOiJIUzI1NiJ9",
        "Negotiate YIIGhgYJKoZIhvcSAQICAQBuggZ1",
        "sf:first",
    ],
)
def test_malformed_authorization_is_not_a_user(value: str | None) -> None:
    assert BasicAuth(parse_credentials(CREDENTIALS)).user(value) is None


def test_auth_is_disabled_only_without_credentials() -> None:
    assert not BasicAuth(()).enabled
    assert BasicAuth(parse_credentials("a:b")).enabled


def test_comparison_checks_every_credential_without_short_circuit() -> None:
    # Behavioural stand-in for constant time: a match on the last credential is found even
    # when earlier ones share the user name, and the first match wins on duplicates.
    auth = BasicAuth(parse_credentials("x:1,x:2,x:3"))
    assert [auth.user(header("x", p)) for p in "1234"] == ["x", "x", "x", None]
