"""`r2sf status`, `r2sf migrate` and the status page at `/`, against a real database.

Runs are recorded through sync/state.py (the engine's own API), so the status reads exactly what
a sync writes. The page is checked as HTML over HTTP and as a screenshot in headless Chromium.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from croniter import croniter

from sync import schema, state
from tests import heroku_connect as hcx
from tests.live import serve

R2SF = str(Path(sys.executable).parent / "r2sf")
CHROMIUM = "/usr/bin/chromium"

TOML = """
[odata]
expose = ["public.*"]

[[sync.jobs]]
name = "category"
table = "warehouse.category"
target = "public.category_c"
key = ["catid"]
schedule = "7 */2 * * *"

[[sync.jobs]]
name = "accounts"
table = "warehouse.account"
target = "salesforce.account"
key = ["accno"]
heroku_connect = { external_id = "accno__c" }
"""

SCHEMA = """
create table public.category_c (catid int primary key, catname varchar(20));
insert into public.category_c select g, 'c' || g from generate_series(1, 42) g;
create table public.big (id int primary key);
insert into public.big select generate_series(1, 150000);
analyze public.big;
"""
# A Heroku Connect mapping (tests/heroku_connect.py): four rows written by the app, two of which
# Connect failed to push; the other two still wait in the trigger log.
SCHEMA += hcx.SCHEMA_SQL + hcx.mapped_table_sql(
    "account", (("accno__c", "varchar(20)"),), unique_identifier="accno__c"
)
SCHEMA += """;
insert into salesforce.account (accno__c) values ('a1'), ('a2'), ('a3'), ('a4');
begin;
set local r2sf_test.connect = 'on';
update salesforce.account set _hc_lastop = 'FAILED', _hc_err = 'REQUIRED_FIELD_MISSING: ' || accno__c
    where accno__c in ('a2', 'a3');
update salesforce._trigger_log set state = 'FAILED'
    where record_id in (select id from salesforce.account where _hc_lastop = 'FAILED');
commit;
"""

ERROR = "value too long for column <catname> in job 'category'\nkey catid=7: 'x' * 300 > 20 & fails"
NOW = datetime.now(UTC).replace(microsecond=0)


async def record(url: str, runs: list[tuple[str, datetime, float, str, dict[str, int]]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
        for job, started, seconds, status, counts in runs:
            run_id = await state.record_run(
                conn, job, started, status, False, counts, ERROR if status == "failed" else None
            )
            # record_run stamps the end with the clock; set the duration the test expects.
            await conn.execute(
                "update r2sf.sync_runs set finished_at = started_at + $2 where id = $1",
                run_id,
                timedelta(seconds=seconds),
            )
    finally:
        await conn.close()


RUNS = [
    ("category", NOW - timedelta(hours=3), 2.5, "ok", {"read": 42, "inserted": 42}),
    ("category", NOW - timedelta(hours=2), 1.0, "ok", {"read": 42, "updated": 5, "deleted": 1}),
    ("category", NOW - timedelta(hours=1), 4.0, "failed", {}),
    ("retired", NOW - timedelta(days=3), 0.5, "ok", {"read": 1, "inserted": 1}),
]


@pytest.fixture(scope="module")
def db(databases: Any) -> str:
    url: str = databases.create(SCHEMA)
    asyncio.run(record(url, RUNS))
    return url


def run_cli(
    tmp_path: Path, url: str, *args: str, toml: str = TOML
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "r2sf.toml"
    config.write_text(toml)
    env = {k: v for k, v in os.environ.items() if k != "REDSHIFT_URL"}
    env.update(DATABASE_URL=url, R2SF_CONFIG=str(config))
    return subprocess.run(
        [R2SF, *args], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_status_lists_last_runs_newest_first_with_duration_changes_and_outcome(
    tmp_path: Path, db: str
) -> None:
    done = run_cli(tmp_path, db, "status")
    out = done.stdout
    block = out.split("job category", 1)[1].split("\njob ", 1)[0]
    lines = [x for x in block.splitlines() if re.match(r"\s+\d{4}-", x)]
    assert len(lines) == 3, out
    assert "failed" in lines[0] and "value too long for column" in lines[0]
    assert "1.0 s" in lines[1] and "changed 6" in lines[1]  # 5 updated + 1 deleted
    assert "2.5 s" in lines[2] and "changed 42" in lines[2]
    started = [datetime.strptime(x.split("  ")[1][:19], "%Y-%m-%d %H:%M:%S") for x in lines]
    assert started == sorted(started, reverse=True)
    # The latest run failed: a monitor calling `r2sf status` sees it in the exit code.
    assert done.returncode == 1


def test_status_shows_the_next_scheduled_time_from_the_cron_expression(
    tmp_path: Path, db: str
) -> None:
    before = datetime.now(UTC)
    out = run_cli(tmp_path, db, "status").stdout
    shown = re.search(r"job category .*next (\S+ \S+) UTC", out)
    assert shown, out
    expected = {
        croniter("7 */2 * * *", before + timedelta(seconds=s)).get_next(datetime) for s in (0, 5)
    }
    assert shown.group(1) in {e.strftime("%Y-%m-%d %H:%M:%S") for e in expected}


def test_status_counts_heroku_connect_failures_and_keeps_unconfigured_jobs(
    tmp_path: Path, db: str
) -> None:
    out = run_cli(tmp_path, db, "status").stdout
    accounts = out.split("job accounts", 1)[1].split("\njob ", 1)[0]
    assert (
        "Heroku Connect: 2 change(s) waiting to be pushed (under a minute),"
        " 2 row(s) FAILED (_hc_lastop)" in accounts
    )
    assert "FAILED a2: REQUIRED_FIELD_MISSING: a2" in accounts
    assert "FAILED a3: REQUIRED_FIELD_MISSING: a3" in accounts
    assert "no runs recorded yet" in accounts
    assert re.search(r"job retired .*no longer configured", out)


def test_status_json_and_limit(tmp_path: Path, db: str) -> None:
    import json

    data = json.loads(run_cli(tmp_path, db, "status", "--json", "--runs", "1").stdout)
    category = next(j for j in data if j["name"] == "category")
    assert len(category["runs"]) == 1 and category["runs"][0]["status"] == "failed"
    assert category["runs"][0]["seconds"] == 4.0


def test_status_before_any_sync_says_so_and_succeeds(tmp_path: Path, fresh_db: str) -> None:
    done = run_cli(tmp_path, fresh_db, "status", toml=TOML.split("[[sync.jobs]]")[0])
    assert done.returncode == 0, done.stderr
    assert "no sync jobs configured and no runs recorded" in done.stdout


def test_migrate_creates_the_state_schema_and_is_idempotent(tmp_path: Path, fresh_db: str) -> None:
    for _ in range(2):
        done = run_cli(tmp_path, fresh_db, "migrate")
        assert done.returncode == 0, done.stderr

    async def tables() -> set[str]:
        conn = await asyncpg.connect(fresh_db)
        try:
            rows = await conn.fetch(
                "select table_name from information_schema.tables where table_schema = 'r2sf'"
            )
            return {r["table_name"] for r in rows}
        finally:
            await conn.close()

    assert {"sync_runs", "watermarks", "schema_version"} <= asyncio.run(tables())
    assert "version" in done.stdout


# -- the page ---------------------------------------------------------------------------------


def test_status_page_shows_sets_counts_urls_runs_charts_and_the_last_error(db: str) -> None:
    with serve(db, TOML) as (base, _app):
        anonymous = httpx.get(base + "/", timeout=10)
        page = httpx.get(base + "/", auth=("sf", "secret"), timeout=10)
    assert anonymous.status_code == 401
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    row = re.search(r"<tr><td>category_c</td><td>public\.category_c</td><td[^>]*>([^<]+)<", text)
    assert row and row.group(1) == "42", text[:2000]
    big = re.search(r"<tr><td>big</td><td>public\.big</td><td[^>]*>([^<]+)<", text)
    assert big and big.group(1).startswith("≈")  # a big table shows the planner's estimate
    assert abs(int(big.group(1).strip("≈ ").replace(",", "")) - 150000) < 15000
    assert f'href="{base}/odata/v4/category_c"' in text
    # One chart per job with runs in the last days (the 3-day-old `retired` run included);
    # `accounts` never ran.
    assert text.count("<svg") == 2
    assert "<strong>retired</strong>" in text
    accounts = text.split("<strong>accounts</strong>", 1)[1].split('<div class="job">', 1)[0]
    assert "no runs" in accounts and "<svg" not in accounts
    assert (
        "Heroku Connect: 2 change(s) waiting to be pushed (under a minute),"
        " 2 row(s) FAILED (_hc_lastop)" in accounts
    )
    assert "FAILED a2: REQUIRED_FIELD_MISSING: a2" in accounts
    # The last error in full, escaped, with its second line.
    assert "value too long for column &lt;catname&gt;" in text
    assert "&#x27;x&#x27; * 300 &gt; 20 &amp; fails" in text
    assert "<catname>" not in text


def test_status_page_renders_in_headless_chromium(db: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs Debian's chromium as root)")
    shot = tmp_path / "status.png"
    with serve(db, TOML) as (base, _app), tempfile.TemporaryDirectory() as profile:
        url = base.replace("http://", "http://sf:secret@") + "/"
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={shot}",
             "--window-size=1200,900", url],
            capture_output=True, timeout=90, check=False,
        )  # fmt: skip
    assert shot.exists(), "chromium wrote no screenshot"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # A blank or error page compresses to a few KB; the page with tables and charts does not.
    assert len(png) > 20_000, len(png)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1200, 900)


def test_metrics_give_each_jobs_last_success_time_and_failure(db: str) -> None:
    with serve(db, TOML) as (base, _app):
        text = httpx.get(base + "/metrics", auth=("sf", "secret"), timeout=10).text
    series = {
        (m.group(1), m.group(2)): float(m.group(3))
        for m in re.finditer(r'^(r2sf_sync_\w+)\{worker="\d+",job="(\w+)"\} (\S+)$', text, re.M)
    }
    last_ok = NOW - timedelta(hours=2) + timedelta(seconds=1.0)  # category's second run
    assert series[("r2sf_sync_last_success_timestamp_seconds", "category")] == pytest.approx(
        last_ok.timestamp()
    )
    assert series[("r2sf_sync_last_run_failed", "category")] == 1.0
    assert series[("r2sf_sync_last_run_failed", "retired")] == 0.0
    assert "# TYPE r2sf_sync_last_success_timestamp_seconds gauge" in text


def test_a_failing_job_is_flagged_in_status_and_on_the_page(tmp_path: Path, db: str) -> None:
    out = run_cli(tmp_path, db, "status").stdout
    category = out.split("job category", 1)[1].split("\njob ", 1)[0]
    assert f"FAILING since {(NOW - timedelta(hours=1)):%Y-%m-%d %H:%M:%S} UTC" in category
    with serve(db, TOML) as (base, _app):
        page = httpx.get(base + "/", auth=("sf", "secret"), timeout=10).text
    block = page.split("<strong>category</strong>", 1)[1].split('<div class="job">', 1)[0]
    assert "FAILING since" in block
    retired = page.split("<strong>retired</strong>", 1)[1].split('<div class="job">', 1)[0]
    assert "FAILING" not in retired and "LATE" not in retired


def test_a_scheduled_job_without_a_run_for_two_slots_is_late() -> None:
    from service.status import JobStatus, Run

    now = datetime(2026, 5, 6, 12, 30, tzinfo=UTC)

    def status(last: datetime) -> JobStatus:
        run = Run("j", last, last + timedelta(seconds=3), "ok", 1, 0, 0, 0, 1, None)
        return JobStatus("j", "public.j", "0 * * * *", None, [run])

    assert status(now - timedelta(minutes=50)).health(now) == ""  # the 12:00 run
    assert status(now - timedelta(minutes=80)).health(now) == ""  # 11:10: only 12:00 missed
    assert (
        status(now - timedelta(hours=3)).health(now) == "LATE: no run since 2026-05-06 09:30:00 UTC"
    )
