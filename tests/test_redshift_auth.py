"""Authentication as Redshift users have it (password, IAM with a cluster or a Serverless
workgroup, profile or keys from the environment, sslmode), from REDSHIFT_URL query parameters
and `[source]` keys: what reaches `redshift_connector.connect` is recorded through the extract
process's documented seam (tests/redshift_connect_recorder.py), and `r2sf check` shows it
without secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.conftest import Databases

SEAM = "tests.redshift_connect_recorder:connect"
IAM_URL = (
    "redshift://examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com:5439/dev"
    "?iam=true&cluster_identifier=examplecluster&db_user=etl&db_groups=analysts,etl"
    "&region=us-west-2&sslmode=verify-full"
)
JOB = '[[sync.jobs]]\nname = "sales"\nquery = "select 1 as id"\ntarget = "public.s"\nkey = ["id"]\n'
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    toml: str,
    *argv: str,
    **env: str,
) -> tuple[int, str, list[dict[str, Any]]]:
    log = tmp_path / "connect.jsonl"
    config = tmp_path / "r2sf.toml"
    config.write_text(toml)
    for k in ("REDSHIFT_URL", "R2SF_CONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "AWS_PROFILE"):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DATABASE_URL", target)
    monkeypatch.setenv("ODATA_CREDENTIALS", "sf:secret")
    monkeypatch.setenv("R2SF_REDSHIFT_CONNECT", SEAM)
    monkeypatch.setenv("R2SF_TEST_CONNECT_LOG", str(log))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return int(exited.value.code or 0), out + err, calls


@pytest.fixture(scope="module")
def target(databases: Databases) -> str:
    return databases.create()


def test_iam_options_in_the_url_and_keys_from_the_environment_reach_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target: str,
) -> None:  # fmt: skip
    code, out, calls = run(
        tmp_path, monkeypatch, capsys, target, JOB, "sync", "--retries", "0",
        REDSHIFT_URL=IAM_URL, AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
        AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN="token-1",
    )  # fmt: skip
    assert code == 1 and "recorded by the test seam" in out
    assert SECRET not in out
    (args,) = calls
    assert args == {
        "host": "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com",
        "port": 5439,
        "database": "dev",
        "application_name": "r2sf sync",
        "timeout": 30,
        "tcp_keepalive": True,
        "tcp_keepalive_idle": 60,
        "tcp_keepalive_interval": 15,
        "tcp_keepalive_count": 4,
        "ssl": True,
        "sslmode": "verify-full",
        "iam": True,
        "cluster_identifier": "examplecluster",
        "db_user": "etl",
        "db_groups": ["analysts", "etl"],
        "region": "us-west-2",
        "access_key_id": "AKIAIOSFODNN7EXAMPLE",
        "secret_access_key": SECRET,
        "session_token": "token-1",
    }


def test_serverless_workgroup_and_profile_from_the_source_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target: str,
) -> None:  # fmt: skip
    toml = (
        '[source]\nurl = "redshift://wg1.123456789012.us-east-1.redshift-serverless.amazonaws.com'
        ':5439/dev?connect_timeout=12"\niam = true\nworkgroup = "wg1"\nprofile = "etl"\n'
        'region = "us-east-1"\nconnect_timeout = 99\n' + JOB
    )
    # A profile wins over keys in the environment: they are not passed at all.
    code, _, calls = run(tmp_path, monkeypatch, capsys, target, toml, "sync", "--retries", "0",
                         AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE", AWS_SECRET_ACCESS_KEY=SECRET)  # fmt: skip
    assert code == 1
    (args,) = calls
    wanted = {
        "iam": True, "is_serverless": True, "serverless_work_group": "wg1", "profile": "etl",
        "region": "us-east-1", "timeout": 12, "sslmode": "verify-ca",
    }  # fmt: skip
    assert {k: args.get(k) for k in wanted} == wanted
    assert "access_key_id" not in args and "password" not in args


def test_password_authentication_passes_user_and_password_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target: str,
) -> None:  # fmt: skip
    code, out, calls = run(
        tmp_path, monkeypatch, capsys, target, JOB, "sync", "--retries", "0",
        REDSHIFT_URL="redshift://etl:p%40ss%2Fw0rd@cluster.example.com/analytics",
        AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE", AWS_SECRET_ACCESS_KEY=SECRET,
    )  # fmt: skip
    assert code == 1 and "p@ss/w0rd" not in out and "p%40ss" not in out
    (args,) = calls
    assert (args["user"], args["password"], args["database"], args["port"]) == (
        "etl", "p@ss/w0rd", "analytics", 5439,
    )  # fmt: skip
    assert (args["ssl"], args["sslmode"]) == (True, "verify-ca")
    assert not {"iam", "access_key_id", "secret_access_key", "profile"} & set(args)


def test_check_shows_how_the_warehouse_is_reached_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target: str,
) -> None:  # fmt: skip
    code, out, calls = run(
        tmp_path, monkeypatch, capsys, target, JOB, "check",
        REDSHIFT_URL=IAM_URL, AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE",
        AWS_SECRET_ACCESS_KEY=SECRET,
    )  # fmt: skip
    assert code == 1  # the seam refuses the connection
    assert (
        "IAM as db_user etl on cluster examplecluster via keys from AWS_ACCESS_KEY_ID (AKIA…LE),"
        " groups analysts,etl, region us-west-2; sslmode verify-full; connect timeout 30 s"
    ) in out
    assert SECRET not in out and "AKIAIOSFODNN7EXAMPLE" not in out
    assert calls[0]["cluster_identifier"] == "examplecluster"


@pytest.mark.parametrize(
    ("url", "key", "fix"),
    [
        (IAM_URL.replace("cluster_identifier", "clusterid"), "clusterid", "cluster_identifier"),
        ("redshift://u@h/dev?sslmode=prefer", "sslmode", "verify-full"),
        ("redshift://u@h/dev?iam=yes&db_user=x", "iam", "cluster_identifier=NAME"),
        ("redshift://u@h/dev?connect_timeout=soon", "connect_timeout", "connect_timeout=30"),
    ],
)
def test_a_bad_option_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    target: str, url: str, key: str, fix: str,
) -> None:  # fmt: skip
    code, out, calls = run(tmp_path, monkeypatch, capsys, target, JOB, "sync", REDSHIFT_URL=url)
    assert code == 2 and calls == []
    assert f"REDSHIFT_URL ?{key}" in out and fix in out
