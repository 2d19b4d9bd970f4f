"""The model follows the catalogue without a restart: periodic check, or SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.live import free_port, serve
from tests.test_odata_read import sql


def wait_for(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def names(base: str) -> set[str]:
    doc = httpx.get(base + "/odata/v4/", auth=("sf", "secret")).json()
    return {v["name"] for v in doc["value"]}


def test_periodic_reload_picks_up_a_new_table(databases: Any) -> None:
    db = databases.create("create table a (id int primary key);")
    toml = '[odata]\nexpose = ["public.*"]\nreload_seconds = 0.2\n'
    with serve(db, toml) as (base, _app):
        assert names(base) == {"a"}
        sql(db, "create table b (id int primary key, v text)")
        sql(db, "insert into b values (1, 'x')")
        wait_for(lambda: "b" in names(base))
        body = httpx.get(base + "/odata/v4/b(1)", auth=("sf", "secret")).json()
        assert body["v"] == "x"


def test_sighup_reloads_a_running_server(databases: Any, tmp_path: Path) -> None:
    db = databases.create("create table a (id int primary key);")
    config = tmp_path / "r2sf.toml"
    config.write_text('[odata]\nexpose = ["public.*"]\n')
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db, "ODATA_CREDENTIALS": "sf:secret"}
    r2sf = Path(sys.executable).with_name("r2sf")
    proc = subprocess.Popen(
        [
            str(r2sf),
            "--config",
            str(config),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(base), timeout=30)
        sql(db, "create table c (id int primary key)")
        assert "c" not in names(base)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "c" in names(base))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz").status_code == 200
    except httpx.TransportError:
        return False
