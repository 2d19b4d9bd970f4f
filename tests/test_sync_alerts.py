"""Failure alerts: the webhook (a real HTTP server here) hears once when a job starts failing
and once when it recovers, not on every failed run; a webhook that is down never fails a run;
`r2sf sync` exits non-zero on failure, as Heroku Scheduler needs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from tests.conftest import Databases
from tests.live import free_port
from tests.test_sync_support import Pair, q, unique, x


class Hook:
    """A local webhook receiver: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/r2sf"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(), databases.create())


def sync(
    pair: Pair, tmp_path: Path, toml: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], **env: str,
) -> tuple[int, str]:  # fmt: skip
    config = tmp_path / "r2sf.toml"
    config.write_text(toml)
    for k in ("R2SF_CONFIG", "R2SF_ALERT_WEBHOOK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DATABASE_URL", pair.target)
    monkeypatch.setenv("REDSHIFT_URL", pair.source)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "sync"])
    return int(exited.value.code or 0), capsys.readouterr().err


def test_the_webhook_hears_the_first_failure_and_the_recovery_only(
    pair: Pair, hook: Hook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    src = unique("alerts")
    x(pair.source, f"CREATE TABLE {src} (id int PRIMARY KEY, label text);"
                   f" INSERT INTO {src} VALUES (1, 'a'), (2, 'b')")  # fmt: skip
    toml = (
        f'[sync]\nalert_webhook = "{hook.url}"\n[[sync.jobs]]\nname = "{src}"\n'
        f'query = "select id, label from {src} where 1 / (select count(*) - 2 from {src}) = 0"\n'
        f'target = "public.{src}"\nkey = ["id"]\n'
    )
    codes = [sync(pair, tmp_path, toml, monkeypatch, capsys)[0] for _ in range(2)]
    assert codes == [1, 1]  # division by zero: a non-zero exit for Heroku Scheduler
    assert [b["status"] for b in hook.bodies] == ["failed"]
    failed = hook.bodies[0]
    assert failed["job"] == src and "division by zero" in failed["error"]
    assert failed["text"].startswith(f"r2sf: job {src} FAILED") and "postgres" not in failed["text"]
    x(pair.source, f"INSERT INTO {src} VALUES (3, 'c')")  # the query works again (count - 2 = 1)
    for _ in range(2):
        code, err = sync(pair, tmp_path, toml, monkeypatch, capsys)
        assert code == 0, err
    assert [b["status"] for b in hook.bodies] == ["failed", "recovered"]
    assert hook.bodies[1]["job"] == src and isinstance(hook.bodies[1]["run_id"], int)


def test_a_webhook_that_is_down_never_fails_the_run(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    src = unique("down")
    x(pair.source, f"CREATE TABLE {src} (id int PRIMARY KEY)")
    toml = (f'[[sync.jobs]]\nname = "{src}"\nquery = "select id from {src}_missing"\n'
            f'target = "public.{src}"\nkey = ["id"]\n')  # fmt: skip
    url = f"http://127.0.0.1:{free_port()}/nobody"
    code, err = sync(pair, tmp_path, toml, monkeypatch, capsys, R2SF_ALERT_WEBHOOK=url)
    assert code == 1 and "event=alert_failed" in err
    assert q(pair.target, "SELECT status FROM r2sf.sync_runs WHERE job = $1", src)[0][0] == "failed"


def test_an_alert_webhook_that_is_not_http_is_a_config_error(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    toml = '[sync]\nalert_webhook = "slack.example.com/hook"\n'
    code, err = sync(pair, tmp_path, toml, monkeypatch, capsys)
    assert code == 2 and "sync.alert_webhook" in err and "https://" in err
