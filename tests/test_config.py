"""Start-up configuration: every mistake names the file or variable, the key and the fix, and
never echoes a secret; `r2sf serve` refuses to run unauthenticated unless told to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.config import ConfigError, load_file, load_settings
from tests.live import free_port

DB = "postgresql://app:hunter2-secret@db.example:5432/warehouse"
R2SF = Path(sys.executable).with_name("r2sf")


def file_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "r2sf.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    message = str(info.value)
    assert message.startswith(str(path)), message  # names the file
    assert "Fix:" in message
    return message


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("[odata]\npage_sise = 5\n", "odata.page_sise", "page_size"),
        ("[odata]\nexpos = ['public.*']\n", "odata.expos", "expose"),
        ("[[odata.sets]]\ntable = 'public.sales'\nkee = ['id']\n", "odata.sets[0].kee", "key"),
        ("[servr]\nport = 1\n", "servr", "server"),
    ],
)
def test_unknown_key_names_it_and_suggests_the_closest(
    tmp_path: Path, text: str, key: str, suggestion: str
) -> None:
    message = file_error(tmp_path, text)
    assert f": {key}:" in message
    assert f"did you mean '{suggestion}'?" in message


def test_page_size_above_2000_is_refused_with_the_limit(tmp_path: Path) -> None:
    message = file_error(tmp_path, "[odata]\npage_size = 5000\n")
    assert "odata.page_size" in message and "2000" in message


@pytest.mark.parametrize("value", [8_000_000, 999])
def test_page_byte_budget_outside_what_salesforce_takes_is_refused(
    tmp_path: Path, value: int
) -> None:
    # Above 7.5 MB the envelope could push an answer past Salesforce's 8 MB limit.
    message = file_error(tmp_path, f"[odata]\nmax_page_bytes = {value}\n")
    assert "odata.max_page_bytes" in message
    assert ("7500000" if value > 7_500_000 else "1000") in message


@pytest.mark.parametrize("path", ["odata", "/odata/v4/", "/odata v4", ""])
def test_bad_service_path_is_refused_with_an_example(tmp_path: Path, path: str) -> None:
    message = file_error(tmp_path, f"[odata]\npath = '{path}'\n")
    assert "odata.path" in message and "/odata/v4" in message


def test_set_table_must_be_schema_qualified(tmp_path: Path) -> None:
    message = file_error(tmp_path, "[[odata.sets]]\ntable = 'sales'\n")
    assert "odata.sets[0].table" in message and "public.sales" in message


def test_invalid_toml_gives_the_line(tmp_path: Path) -> None:
    message = file_error(tmp_path, "[odata]\npage_size = 10\n[odata\n")
    assert "not valid TOML" in message and "line 3" in message


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(str(missing), {"DATABASE_URL": DB})
    assert str(missing) in str(info.value) and "--config" in str(info.value)


def test_config_path_comes_from_r2sf_config(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[odata]\npage_size = 7\n")
    settings = load_settings(None, {"DATABASE_URL": DB, "R2SF_CONFIG": str(path)})
    assert settings.config_path == path and settings.odata.page_size == 7


def env_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ)
    message = str(info.value)
    assert "Fix:" in message
    assert "hunter2" not in message and "s3cr3t" not in message
    return message


def test_missing_database_url_says_what_to_set() -> None:
    assert env_error({}).startswith("DATABASE_URL: not set")


@pytest.mark.parametrize("url", ["mysql://app:hunter2@db/x", "sqlite:///x.db", "not a url"])
def test_non_postgresql_database_url_is_refused_without_echoing_it(url: str) -> None:
    message = env_error({"DATABASE_URL": url})
    assert message.startswith("DATABASE_URL:") and "postgresql://" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:pw@db:5432/x",
        "postgresql://app:pw@db:5432/x",
        "postgresql+asyncpg://app:pw@db/x",
    ],
)
def test_heroku_postgres_scheme_is_accepted_and_normalised(url: str) -> None:
    settings = load_settings(None, {"DATABASE_URL": url})
    assert settings.database_url.startswith("postgresql://app:pw@db")


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "80.5", "\uff18\uff10"])
def test_bad_port_is_refused(port: str) -> None:
    assert env_error({"DATABASE_URL": DB, "PORT": port}).startswith("PORT:")


def test_port_comes_from_the_environment() -> None:
    assert load_settings(None, {"DATABASE_URL": DB, "PORT": "5123"}).port == 5123


@pytest.mark.parametrize("creds", ["nocolon", "user:", ":s3cr3t", "a:s3cr3t,b", "a:s3cr3t,:x"])
def test_bad_odata_credentials_are_refused_without_echoing_them(creds: str) -> None:
    message = env_error({"DATABASE_URL": DB, "ODATA_CREDENTIALS": creds})
    assert message.startswith("ODATA_CREDENTIALS:") and "user:password" in message


def test_several_credentials_are_parsed_in_order() -> None:
    settings = load_settings(
        None, {"DATABASE_URL": DB, "ODATA_CREDENTIALS": "sf:one, rotated:two:with:colons ,"}
    )
    assert [(c.user, c.password) for c in settings.credentials] == [
        ("sf", "one"),
        ("rotated", "two:with:colons"),
    ]


# --- r2sf serve as a subprocess ------------------------------------------------------------------


def serve_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ODATA_CREDENTIALS", "R2SF_CONFIG")}
    env.update({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **extra})
    (tmp_path / "r2sf.toml").write_text("[odata]\nexpose = ['public.*']\n")
    return env


def test_serve_without_credentials_exits_with_one_line_and_no_secret(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(R2SF), "--config", str(tmp_path / "r2sf.toml"), "serve", "--workers", "1"],
        env=serve_env(tmp_path, DB),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "ODATA_CREDENTIALS" in lines[0] and "--allow-anonymous" in lines[0]
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_serve_with_allow_anonymous_starts_and_answers_healthz(
    tmp_path: Path, databases: object
) -> None:
    url = databases.create("create table t (id int primary key); insert into t values (1);")  # type: ignore[attr-defined]
    port = free_port()
    env = serve_env(tmp_path, url)
    proc = subprocess.Popen(
        [
            str(R2SF),
            "--config",
            str(tmp_path / "r2sf.toml"),
            "serve",
            "--allow-anonymous",
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert status == 200, proc.poll()
        data = httpx.get(f"http://127.0.0.1:{port}/odata/v4/t", timeout=10)
        assert data.status_code == 200 and data.json()["value"] == [{"id": 1}]
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode is not None
    assert "Traceback" not in err, err


def empty(tmp_path: Path) -> str:
    path = tmp_path / "empty.toml"
    path.write_text("")
    return str(path)


def test_pooler_and_follower_urls_decide_where_reads_and_writes_go(tmp_path: Path) -> None:
    config = tmp_path / "r2sf.toml"
    config.write_text('[server]\nread_url = "postgres://r:pw@file-follower.example/db"\n')
    pool = "postgres://app:pw@pooler.example:5432/warehouse"
    follower = "postgres://app:pw@follower.example:5432/warehouse"
    plain = load_settings(empty(tmp_path), {"DATABASE_URL": DB})
    assert plain.read_url == plain.write_url == plain.database_url
    pooled = load_settings(
        empty(tmp_path), {"DATABASE_URL": DB, "DATABASE_CONNECTION_POOL_URL": pool}
    )
    assert pooled.write_url == pooled.read_url
    assert pooled.write_url.startswith("postgresql://app:pw@pooler.example:5432/")
    assert pooled.write_url.endswith("sslmode=require")  # a remote pooler gets SSL like the rest
    both = load_settings(
        str(config),
        {
            "DATABASE_URL": DB,
            "DATABASE_CONNECTION_POOL_URL": pool,
            "DATABASE_FOLLOWER_URL": follower,
        },
    )
    assert "follower.example" in both.read_url and "pooler.example" in both.write_url
    assert "file-follower" not in both.read_url  # the environment wins over [server] read_url
    from_file = load_settings(str(config), {"DATABASE_URL": DB})
    assert (
        "file-follower.example" in from_file.read_url
        and from_file.write_url == from_file.database_url
    )


@pytest.mark.parametrize("variable", ["DATABASE_CONNECTION_POOL_URL", "DATABASE_FOLLOWER_URL"])
def test_a_bad_pooler_or_follower_url_names_its_variable_and_hides_the_password(
    tmp_path: Path, variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(empty(tmp_path), {"DATABASE_URL": DB, variable: "mysql://u:sekrit@h/db"})
    assert str(info.value).startswith(variable) and "sekrit" not in str(info.value)
