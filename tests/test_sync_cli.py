"""`r2sf sync`, `r2sf scheduler` and `r2sf discover` as real subprocesses: exit codes, one-line
reasons, no passwords in logs, lock refusal, SIGKILL mid-load leaving the target unchanged,
SIGTERM stopping the scheduler, and discover output that loads back as a valid config."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.cli import main
from service.config import FileConfig
from sync import state
from sync.config import load_jobs
from tests.conftest import Databases
from tests.test_sync_support import Pair, changed, q, unique, x

R2SF = str(Path(sys.executable).parent / "r2sf")
PASSWORD = "s3cret-pw"

# Source helpers: a table and a function that can stall the stream at one row, controlled
# by a flag table, so a run can be caught (and killed) in the middle of a load.
SOURCE_SETUP = """
CREATE TABLE ctl (pause boolean NOT NULL);
INSERT INTO ctl VALUES (false);
CREATE FUNCTION stall_at(id int, at int) RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN id = at AND (SELECT pause FROM ctl) THEN pg_sleep(60) IS NOT NULL
           ELSE true END
$$;
"""
TARGET_SETUP = """
CREATE TABLE ctl (pause boolean NOT NULL);
INSERT INTO ctl VALUES (false);
CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT pause FROM ctl) THEN PERFORM pg_sleep(60); END IF;
    RETURN NEW;
END $$;
"""


def with_password(url: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


@pytest.fixture(scope="module")
def pair(databases: Databases) -> Iterator[Pair]:
    yield Pair(databases.create(SOURCE_SETUP), databases.create(TARGET_SETUP))


def items(pair: Pair, rows: int) -> str:
    name = unique("items")
    x(
        pair.source,
        f"CREATE TABLE {name} (id int PRIMARY KEY, label text);"
        f" INSERT INTO {name} SELECT g, 'item ' || g FROM generate_series(1, {rows}) g",
    )
    return name


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r2sf.toml"
    path.write_text(body)
    return path


def job_toml(name: str, query: str, target: str, extra: str = "") -> str:
    return (
        f'[[sync.jobs]]\nname = "{name}"\nquery = "{query}"\ntarget = "{target}"\n'
        f'key = ["id"]\n{extra}\n'
    )


def env(pair: Pair) -> dict[str, str]:
    out = dict(os.environ)
    out["DATABASE_URL"] = with_password(pair.target)
    out["REDSHIFT_URL"] = with_password(pair.source)
    out.pop("R2SF_CONFIG", None)
    return out


def r2sf(
    pair: Pair, config: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [R2SF, "--config", str(config), *args],
        env=env(pair),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
    )


def in_process(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    *argv: str,
) -> tuple[int, str, str]:
    """Run the CLI's own main() in this process (faster than a subprocess on a busy machine)."""
    for k in ("DATABASE_URL", "REDSHIFT_URL", "R2SF_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    for k in ("DATABASE_URL", "REDSHIFT_URL"):
        if k in environ:
            monkeypatch.setenv(k, environ[k])
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def start(pair: Pair, config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [R2SF, "--config", str(config), *args],
        env=env(pair),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=config.parent,
    )


def wait_for_sleep(url: str, app_like: str, table: str, timeout: float = 20) -> None:
    """Wait until a backend of the given application, working on `table`, is in pg_sleep()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = q(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            " AND application_name LIKE $1 AND datname = current_database()"
            " AND query LIKE '%' || $2 || '%'",
            app_like,
            table,
        )
        if rows[0][0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {app_like} backend reached pg_sleep")


def end_stalled_queries(url: str, table: str) -> None:
    """The source query of a killed run sleeps on; end it so it does not outlive the test."""
    q(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND query LIKE '%' || $1 || '%'",
        table,
    )


def test_sync_cli_loads_and_logs_plain_lines_without_passwords(pair: Pair, tmp_path: Path) -> None:
    src = items(pair, 300)
    cfg = write_config(tmp_path, job_toml(src, f"select id, label from {src}", f"public.{src}"))
    first = r2sf(pair, cfg, "sync")
    assert first.returncode == 0, first.stderr
    assert "event=done" in first.stderr and "inserted=300" in first.stderr
    assert PASSWORD not in first.stderr + first.stdout
    assert "***" in first.stderr
    again = r2sf(pair, cfg, "sync", src)
    assert again.returncode == 0 and "inserted=0 updated=0" in again.stderr
    assert q(pair.target, f"SELECT count(*) FROM {src}")[0][0] == 300


def test_sync_cli_dry_run_prints_counts_and_samples(pair: Pair, tmp_path: Path) -> None:
    src = items(pair, 10)
    cfg = write_config(tmp_path, job_toml(src, f"select id, label from {src}", f"public.{src}"))
    assert r2sf(pair, cfg, "sync").returncode == 0
    x(pair.source, f"UPDATE {src} SET label = 'x' WHERE id = 4")
    dry = r2sf(pair, cfg, "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would insert 0, update 1, delete 0, leave 9 unchanged" in dry.stdout
    assert "update: id=4" in dry.stdout
    assert q(pair.target, f"SELECT label FROM {src} WHERE id = 4")[0][0] == "item 4"


def test_config_errors_exit_2_naming_the_key_and_the_fix(pair: Pair, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, job_toml("j", "select 1 as id", "public.j", 'deletes = "sometimes"')
    )
    res = r2sf(pair, cfg, "sync")
    assert res.returncode == 2
    assert "sync.jobs[0].deletes" in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.stderr
    cfg = write_config(tmp_path, job_toml("j", "select 1 as id", "public.j"))
    res = r2sf(pair, cfg, "sync", "k")
    assert res.returncode == 2 and "no job named 'k'" in res.stderr


def test_failed_run_exits_1_with_a_one_line_reason(pair: Pair, tmp_path: Path) -> None:
    src = items(pair, 20)
    body = job_toml(
        src, f"select id, label from {src}", f"public.{src}", 'deletes = "hard"\nmax_deletes = 1'
    )
    cfg = write_config(tmp_path, body)
    assert r2sf(pair, cfg, "sync").returncode == 0
    x(pair.source, f"DELETE FROM {src} WHERE id <= 5")
    res = r2sf(pair, cfg, "sync")
    assert res.returncode == 1
    reason = [ln for ln in res.stderr.splitlines() if ln.startswith("r2sf sync:")]
    assert len(reason) == 1 and "would delete 5 of 20 rows" in reason[0]
    assert q(pair.target, f"SELECT count(*) FROM {src}")[0][0] == 20


def test_second_run_of_a_locked_job_exits_3_saying_who_holds_it(pair: Pair, tmp_path: Path) -> None:
    src = items(pair, 5)
    cfg = write_config(tmp_path, job_toml(src, f"select id, label from {src}", f"public.{src}"))

    async def hold() -> tuple[asyncpg.Connection, int]:
        conn = await asyncpg.connect(
            pair.target, server_settings={"application_name": "holder-under-test"}
        )
        await conn.execute("BEGIN")  # the job lock lasts as long as this transaction
        assert await state.try_lock(conn, src) is None
        return conn, conn.get_server_pid()

    loop = asyncio.new_event_loop()
    conn, pid = loop.run_until_complete(hold())
    try:
        res = r2sf(pair, cfg, "sync")
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
    assert res.returncode == 3, res.stderr
    assert f"pid {pid}" in res.stderr and "holder-under-test" in res.stderr
    assert r2sf(pair, cfg, "sync").returncode == 0


def test_sigkill_while_staging_leaves_the_target_unchanged(pair: Pair, tmp_path: Path) -> None:
    src = items(pair, 20000)
    good = job_toml(src, f"select id, label from {src}", f"public.{src}")
    stall = job_toml(src, f"select id, label from {src} where stall_at(id, 15000)", f"public.{src}")
    assert r2sf(pair, write_config(tmp_path, good), "sync").returncode == 0
    x(pair.source, f"UPDATE {src} SET label = label || ' v2' WHERE id % 2 = 0")
    before = pair.versions(f"public.{src}")
    runs = q(pair.target, "SELECT count(*) FROM r2sf.sync_runs WHERE job = $1", src)[0][0]
    x(pair.source, "UPDATE ctl SET pause = true")
    try:
        proc = start(pair, write_config(tmp_path, stall), "sync")
        wait_for_sleep(pair.source, "r2sf sync (extract)", src)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        x(pair.source, "UPDATE ctl SET pause = false")
        end_stalled_queries(pair.source, src)
    assert changed(before, pair.versions(f"public.{src}")) == set()
    assert q(pair.target, "SELECT count(*) FROM r2sf.sync_runs WHERE job = $1", src)[0][0] == runs
    res = r2sf(pair, write_config(tmp_path, good), "sync")
    assert res.returncode == 0, res.stderr
    assert changed(before, pair.versions(f"public.{src}")) == set(range(2, 20001, 2))


def test_sigkill_mid_merge_rolls_back_and_the_next_run_completes(
    pair: Pair, tmp_path: Path
) -> None:
    src = items(pair, 1000)
    cfg = write_config(tmp_path, job_toml(src, f"select id, label from {src}", f"public.{src}"))
    assert r2sf(pair, cfg, "sync").returncode == 0
    x(
        pair.target,
        f"CREATE TRIGGER stall BEFORE UPDATE ON {src} FOR EACH ROW"
        " WHEN (OLD.id = 500) EXECUTE FUNCTION stall()",
    )
    x(pair.source, f"UPDATE {src} SET label = 'v2' WHERE id > 100")
    before = pair.versions(f"public.{src}")
    x(pair.target, "UPDATE ctl SET pause = true")
    try:
        proc = start(pair, cfg, "sync")
        wait_for_sleep(pair.target, "r2sf sync %", src)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        # Readers are not blocked and see the old rows while the dead run's merge is pending.
        assert changed(before, pair.versions(f"public.{src}")) == set()
    finally:
        x(pair.target, "UPDATE ctl SET pause = false")
    deadline = time.monotonic() + 20
    while True:  # the server notices the dead client within client_connection_check_interval
        res = r2sf(pair, cfg, "sync")
        if res.returncode != 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert res.returncode == 0, res.stderr
    assert "updated=900" in res.stderr
    assert changed(before, pair.versions(f"public.{src}")) == set(range(101, 1001))


def test_scheduler_stops_on_sigterm_mid_run_without_writing(pair: Pair, tmp_path: Path) -> None:
    src = items(pair, 3000)
    good = job_toml(src, f"select id, label from {src}", f"public.{src}")
    assert r2sf(pair, write_config(tmp_path, good), "sync").returncode == 0
    x(pair.source, f"UPDATE {src} SET label = 'v2'")
    before = pair.versions(f"public.{src}")
    body = job_toml(
        src,
        f"select id, label from {src} where stall_at(id, 2000)",
        f"public.{src}",
        'schedule = "* * * * * *"',
    )
    x(pair.source, "UPDATE ctl SET pause = true")
    try:
        proc = start(pair, write_config(tmp_path, body), "scheduler")
        wait_for_sleep(pair.source, "r2sf sync (extract)", src)
        proc.send_signal(signal.SIGTERM)
        # Heroku kills 30 s after SIGTERM; not exiting by then raises TimeoutExpired here.
        _, err = proc.communicate(timeout=25)
    finally:
        x(pair.source, "UPDATE ctl SET pause = false")
        end_stalled_queries(pair.source, src)
    assert proc.returncode == 0, err
    assert "event=scheduler_stopped" in err and "event=cancelling" in err
    assert changed(before, pair.versions(f"public.{src}")) == set()


def test_scheduler_retries_a_refused_connection_with_backoff(pair: Pair, tmp_path: Path) -> None:
    body = job_toml("down", "select 1 as id", "public.down", 'schedule = "* * * * * *"')
    cfg = write_config(tmp_path, body)
    environ = env(pair)
    environ["REDSHIFT_URL"] = "postgresql://postgres@127.0.0.1:9/nowhere"  # discard port
    proc = subprocess.Popen(
        [R2SF, "--config", str(cfg), "scheduler", "--max-retries", "2", "--retry-delay", "0.25"],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Read until the retries have run out (however slow the start-up), then stop it.
    assert proc.stderr is not None
    guard = threading.Timer(60, proc.kill)
    guard.start()
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "event=giving_up" in line:
            break
    guard.cancel()
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=15)
    err = "".join(seen) + (rest or "")
    assert proc.returncode == 0, err
    assert "event=retrying job=down attempt=1 in_seconds=0.25" in err
    assert "event=retrying job=down attempt=2 in_seconds=0.5" in err
    assert "event=giving_up job=down attempts=3" in err


def test_scheduler_without_scheduled_jobs_is_a_config_error(
    pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, job_toml("j", "select 1 as id", "public.j"))
    code, _, err = in_process(capsys, monkeypatch, env(pair), "--config", str(cfg), "scheduler")
    assert code == 2 and "no job has a schedule" in err


def test_discover_prints_toml_that_loads_back_as_valid_jobs(
    pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = unique("wh")
    x(
        pair.source,
        f"CREATE SCHEMA {schema};"
        f" CREATE TABLE {schema}.category (catid smallint PRIMARY KEY, catgroup varchar(10),"
        "  catname varchar(10), catdesc varchar(50));"
        f" CREATE TABLE {schema}.sales (salesid int, listid int, pricepaid numeric(8,2),"
        "  PRIMARY KEY (salesid, listid));"
        f" CREATE TABLE {schema}.other (x int)",
    )
    cfg = write_config(tmp_path, "")
    code, out, err = in_process(
        capsys, monkeypatch, {}, "--config", str(cfg), "discover", "--source", pair.source,
        "--schema", schema, "--tables", "category", "sales",
    )  # fmt: skip
    assert code == 0, err
    parsed = tomllib.loads(out)
    jobs = load_jobs(FileConfig.model_validate(parsed))
    by_name = {j.name: j for j in jobs}
    assert set(by_name) == {"category", "sales"}
    assert by_name["category"].key == ["catid"]
    assert by_name["sales"].key == ["salesid", "listid"]
    assert by_name["category"].table == f"{schema}.category"
    assert "catgroup character varying(10)" in out


def test_discover_heroku_connect_maps_columns_to_the_salesforce_table(
    databases: Databases,
    pair: Pair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = unique("wh")
    x(
        pair.source,
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.category"
        " (catid smallint PRIMARY KEY, catgroup varchar(10), catname varchar(10), extra int,"
        " price numeric(10, 2), weight numeric(8, 3), total numeric(12, 2))",
    )
    target = databases.create(
        "CREATE SCHEMA salesforce; CREATE TABLE salesforce.category__c (id serial PRIMARY KEY,"
        " sfid varchar(18), _hc_lastop varchar(32), catid__c double precision UNIQUE,"
        " catgroup__c varchar(10), name varchar(80), catname__c varchar(10),"
        " price__c double precision, weight__c double precision, total__c numeric(14, 2))"
    )
    code, out, err = in_process(
        capsys, monkeypatch, {"DATABASE_URL": target}, "--config", str(write_config(tmp_path, "")),
        "discover", "--source", pair.source, "--schema", schema, "--heroku-connect",
    )  # fmt: skip
    assert code == 0, err
    (job,) = load_jobs(FileConfig.model_validate(tomllib.loads(out)))
    assert job.target == "salesforce.category__c"
    assert job.heroku_connect is not None and job.heroku_connect.external_id == "catid__c"
    assert job.columns == {
        "catid": "catid__c",
        "catgroup": "catgroup__c",
        "catname": "catname__c",
        "price": "price__c",
        "weight": "weight__c",
        "total": "total__c",
    }
    # Decimals into double precision fields: the source's scale, to be checked in Salesforce.
    assert job.heroku_connect.scale == {"price__c": 2, "weight__c": 3}
    assert "extra" not in (job.query or "") and "left out: extra" in out
