"""Deploy files and production defaults: Procfile, Dockerfile, heroku.yml, app.json, the example
config, SSL to Heroku Postgres and the plain-HTTP refusal.

Docker cannot run here, so the image files are checked statically; everything that can run
(each Procfile command, the HEALTHCHECK probe) is run for real against a test database.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from service.config import (
    FileConfig,
    ODataConfig,
    ServerConfig,
    load_file,
    normalise_database_url,
)
from sync.config import Job
from tests.live import free_port, serve

ROOT = Path(__file__).resolve().parent.parent
ENV_READ = r"""env(?:iron)?(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']"""
BIN = Path(sys.executable).parent


def procfile() -> dict[str, str]:
    out = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, _, command = line.partition(":")
            out[kind.strip()] = command.strip()
    return out


def test_procfile_has_web_clock_and_release() -> None:
    assert set(procfile()) == {"web", "clock", "release"}


@pytest.mark.parametrize("kind", ["web", "clock", "release"])
def test_every_procfile_command_is_a_real_r2sf_command(kind: str) -> None:
    argv = shlex.split(procfile()[kind])
    assert argv[0] == "r2sf"
    done = subprocess.run(
        [str(BIN / "r2sf"), argv[1], "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_procfile_web_binds_port_answers_healthz_and_logs_json(fresh_db: str) -> None:
    port = free_port()
    env = dict(os.environ, PORT=str(port), DATABASE_URL=fresh_db, ODATA_CREDENTIALS="sf:secret",
               WEB_CONCURRENCY="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")  # fmt: skip
    env.pop("LOG_FORMAT", None)
    env.pop("R2SF_CONFIG", None)
    proc = subprocess.Popen(
        ["sh", "-c", "exec " + procfile()["web"]],
        env=env,
        cwd=ROOT / "tests",  # no r2sf.toml here: the built-in defaults
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "r2sf serve exited"
            assert time.monotonic() < deadline, "the web process never answered /healthz on $PORT"
            time.sleep(0.2)
        # The Dockerfile's HEALTHCHECK probe, run as Docker would run it.
        probe = re.search(r"^HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])$", dockerfile(), re.M)
        assert probe, "no exec-form HEALTHCHECK"
        argv = json.loads(probe.group(1))
        done = subprocess.run(
            [sys.executable if argv[0] == "python" else argv[0], *argv[1:]],
            env=dict(os.environ, PORT=str(port)),
            timeout=30,
        )
        assert done.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines, "the web process logged nothing"
    records = [json.loads(x) for x in lines]  # not a terminal: one JSON object per line
    assert any("serving /odata/v4" in r["message"] for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def heroku_yml_run() -> dict[str, str]:
    text = (ROOT / "heroku.yml").read_text()
    block = text.split("\nrun:\n", 1)[1]
    return dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in block.splitlines() if line.strip())
    )


def test_heroku_yml_runs_the_procfile_commands() -> None:
    proc = procfile()
    assert heroku_yml_run() == {"web": proc["web"], "clock": proc["clock"]}
    assert proc["release"] in (ROOT / "heroku.yml").read_text()


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_slim_locked_and_non_root() -> None:
    text = dockerfile()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2 and all("slim" in f for f in froms)
    assert re.search(r"pip install --require-hashes -r requirements-runtime\.lock", text)
    assert re.search(r"pip install --no-deps", text)  # the project adds no unpinned packages
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "/healthz" in text.split("HEALTHCHECK", 1)[1]
    cmd = re.findall(r"^CMD\s+(.+)$", text, re.M)[-1]
    assert json.loads(cmd) == ["r2sf", "serve"]


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M))


def test_runtime_lock_pins_the_same_versions_without_test_tools() -> None:
    full, runtime = _pins("requirements.lock"), _pins("requirements-runtime.lock")
    assert runtime and set(runtime) <= set(full)
    assert {k: full[k] for k in runtime} == runtime
    assert {"fastapi", "uvicorn", "asyncpg", "hatchling"} <= set(runtime)
    assert not {"pytest", "mypy", "ruff", "hypothesis"} & set(runtime)


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    ignored = {x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".r2sf", ".env"} <= ignored


def test_app_json_declares_postgres_formation_and_every_env_var_the_code_reads() -> None:
    app = json.loads((ROOT / "app.json").read_text())
    assert any(a["plan"].startswith("heroku-postgresql") for a in app["addons"])
    assert {"web", "clock"} <= set(app["formation"])
    documented = set(app["env"])
    for spec in app["env"].values():
        assert spec["description"]
    read = set()
    for package in ("service", "odata", "sync"):
        for path in (ROOT / package).glob("*.py"):
            read |= set(re.findall(ENV_READ, path.read_text()))
    assert {"DATABASE_URL", "ODATA_CREDENTIALS", "REDSHIFT_URL"} <= read  # the scan works
    provided = {
        "DATABASE_URL": "set by the heroku-postgresql add-on",
        "PORT": "set by Heroku for the web dyno",
        "R2SF_ALLOW_ANONYMOUS": "internal: r2sf serve passes --allow-anonymous to its workers",
        "R2SF_DEBUG": "developer switch of the Redshift path, not for deployments",
        "PYTHONPATH": "internal: passed on to a helper subprocess",
        "R2SF_REDSHIFT_CONNECT": "test seam of the Redshift extract (docs/architecture.md)",
    }
    assert read - documented - set(provided) == set()


def test_example_config_is_valid_and_mentions_every_key() -> None:
    path = ROOT / "r2sf.example.toml"
    load_file(path)  # raises on any invalid or unknown key
    text = path.read_text()
    keys = {*ODataConfig.model_fields, *ServerConfig.model_fields, *Job.model_fields}
    keys -= {"sets"}  # written as [[odata.sets]]
    missing = [k for k in sorted(keys) if not re.search(rf"^#?\s*{k} = ", text, re.M)]
    assert missing == []
    assert "[[odata.sets]]" in text and "[[sync.jobs]]" in text and "[source]" in text
    assert set(tomllib.loads(text)) <= set(FileConfig.model_fields)


def test_demo_config_is_a_normal_r2sf_toml() -> None:
    from sync.config import load_jobs

    file = load_file(ROOT / "demo" / "r2sf.toml")
    assert [j.name for j in load_jobs(file)] == ["category", "event", "sales_by_event_month"]


# -- production defaults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1",
         "postgresql://u:p@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1?sslmode=require"),
        ("postgresql://u:p@db.example.com/d?application_name=x",
         "postgresql://u:p@db.example.com/d?application_name=x&sslmode=require"),
        ("postgresql://u@db.example.com/d?sslmode=disable",
         "postgresql://u@db.example.com/d?sslmode=disable"),
        ("postgresql://u@db.example.com/d?sslmode=verify-full",
         "postgresql://u@db.example.com/d?sslmode=verify-full"),
        ("postgresql://u@db.example.com/d?ssl=true", "postgresql://u@db.example.com/d?ssl=true"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("postgresql://u@localhost/d", "postgresql://u@localhost/d"),
        ("postgresql://u@[::1]:5432/d", "postgresql://u@[::1]:5432/d"),
        ("postgresql://u@/d", "postgresql://u@/d"),
        ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql://postgres:@/postgres?host=/tmp/pg"),
        ("postgresql://u@%2Ftmp%2Fpg/d", "postgresql://u@%2Ftmp%2Fpg/d"),
        ("postgresql://u@/d?host=db.example.com", "postgresql://u@/d?host=db.example.com&sslmode=require"),
        ("postgresql://u@h1:5432,localhost:5432/d", "postgresql://u@h1:5432,localhost:5432/d?sslmode=require"),
        ("postgresql+asyncpg://u@[2001:db8::1]:5432/d",
         "postgresql://u@[2001:db8::1]:5432/d?sslmode=require"),
    ],
)  # fmt: skip
def test_database_url_requires_ssl_to_remote_hosts_only(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected


def test_plain_http_behind_the_router_is_refused_before_auth_and_cache(fresh_db: str) -> None:
    auth = ("sf", "secret")
    with serve(fresh_db, "[odata]\nexpose = []\n") as (base, _app):
        for path in ("/odata/v4/", "/odata/v4/$metadata", "/"):
            ok = httpx.get(base + path, auth=auth, headers={"X-Forwarded-Proto": "https"})
            assert ok.status_code == 200, (path, ok.text)
            plain = httpx.get(base + path, auth=auth, headers={"X-Forwarded-Proto": "http"})
            assert plain.status_code == 403, path
            assert "https://" in plain.json()["error"]["message"]
        # Several proxies: the first scheme is the client's.
        chained = httpx.get(base + "/odata/v4/", auth=auth,
                            headers={"X-Forwarded-Proto": "http, https"})  # fmt: skip
        assert chained.status_code == 403
        assert (
            httpx.get(base + "/healthz", headers={"X-Forwarded-Proto": "http"}).status_code == 200
        )
        assert httpx.get(base + "/odata/v4/", auth=auth).status_code == 200  # a direct request


def test_require_https_false_allows_plain_http(fresh_db: str) -> None:
    toml = "[odata]\nexpose = []\n[server]\nrequire_https = false\n"
    with serve(fresh_db, toml) as (base, _app):
        got = httpx.get(base + "/odata/v4/", auth=("sf", "secret"),
                        headers={"X-Forwarded-Proto": "http"})  # fmt: skip
    assert got.status_code == 200
