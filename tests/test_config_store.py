"""The stored configuration: import/export, one validation with r2sf.toml, versions and roll
back, R2SF_CONFIG_TOML, the console's credential and CSRF, and live pick-up by serve and the
scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service import config_store
from service.cli import main
from service.config import ConfigError, FileConfig, load_settings
from sync import stored_config
from sync.commands import stored_jobs
from sync.config import Job
from sync.progress import Reporter
from sync.schedule import run_scheduler
from tests.conftest import run
from tests.live import serve

SETUP = """
CREATE TABLE public.colours (id int PRIMARY KEY, name text);
INSERT INTO public.colours VALUES (1, 'red'), (2, 'green');
CREATE TABLE public.hidden (id int PRIMARY KEY);
"""

FILE = """
[server]
pool_size = 4

[odata]
page_size = 50
expose = ["public.colours"]

[[odata.sets]]
table = "public.colours"
name = "Colour"

[[sync.jobs]]
name = "colours"
query = "SELECT 1 AS id, 'say \\"hi\\"\\n' AS name"
target = "public.colours_copy"
key = ["id"]
schedule = "0 3 * * *"
max_deletes = "5%"
columns = { name = "label" }
"""


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
        *argv: str) -> tuple[int, str, str]:  # fmt: skip
    for k in ("R2SF_CONFIG", "R2SF_CONFIG_TOML", "ADMIN_CREDENTIALS", "REDSHIFT_URL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def versions(url: str) -> list[stored_config.Version]:
    async def go() -> list[stored_config.Version]:
        conn = await asyncpg.connect(url)
        try:
            return await stored_config.versions(conn)
        finally:
            await conn.close()

    result: list[stored_config.Version] = run(go())
    return result


def test_import_stores_the_managed_part_and_export_prints_it_back(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    src = tmp_path / "sandbox.toml"
    src.write_text(FILE)
    env = {"DATABASE_URL": fresh_db}
    code, out, err = cli(capsys, monkeypatch, env, "config", "import", str(src))
    assert code == 0, err
    assert "stored" in out and "version 1" in out
    assert "[server]" in err and "odata.page_size" in err  # said to stay in the file
    code, exported, _ = cli(capsys, monkeypatch, env, "config", "export")
    assert code == 0 and exported.startswith("# r2sf stored configuration, version 1")
    data = tomllib.loads(exported)
    original = tomllib.loads(FILE)
    assert data["sync"] == original["sync"]
    assert data["odata"] == {"expose": ["public.colours"], "sets": original["odata"]["sets"]}
    # Exported TOML imports again (moving a setup from a sandbox to production), with a diff.
    (tmp_path / "prod.toml").write_text(exported.replace("0 3 * * *", "30 4 * * *"))
    code, _, err = cli(capsys, monkeypatch, env, "config", "import", str(tmp_path / "prod.toml"))
    assert code == 0, err
    v2, v1 = versions(fresh_db)[:2]
    assert (v2.id, v1.id) == (2, 1) and v2.action == "imported prod.toml"
    assert '-schedule = "0 3 * * *"\n+schedule = "30 4 * * *"' in v2.diff
    assert v2.saved_by.startswith("r2sf config import")


def test_a_stored_version_is_refused_with_the_same_message_as_r2sf_toml(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    bad = tmp_path / "r2sf.toml"
    bad.write_text(FILE.replace('schedule = "0 3 * * *"', 'schedule = "daily"'))
    env = {"DATABASE_URL": fresh_db, "REDSHIFT_URL": fresh_db}
    code, _, from_file = cli(capsys, monkeypatch, env, "--config", str(bad), "sync", "--dry-run")
    code2, _, from_import = cli(capsys, monkeypatch, env, "config", "import", str(bad))
    assert code == code2 == 2
    rule = (
        "sync.jobs[0].schedule: 'daily' is not a cron expression (minute hour day month weekday)."
    )
    assert rule in from_file and rule in from_import
    fix = from_file.split("Fix: ", 1)[1]
    assert from_import.split("Fix: ", 1)[1] == fix and fix.startswith("write five cron fields")
    assert versions(fresh_db) == []


def test_the_stored_configuration_never_holds_a_webhook_secret(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    f = tmp_path / "r2sf.toml"
    f.write_text('[sync]\nalert_webhook = "https://hooks.example/T0/B0/s3cr3t"\n')
    code, out, err = cli(
        capsys, monkeypatch, {"DATABASE_URL": fresh_db}, "config", "import", str(f)
    )
    assert code == 2 and "sync.alert_webhook" in err and "R2SF_ALERT_WEBHOOK" in err
    assert "s3cr3t" not in out + err
    assert versions(fresh_db) == []


def test_r2sf_config_toml_holds_the_whole_file_for_an_app_without_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./r2sf.toml
    env = {"DATABASE_URL": "postgresql://localhost/x", "R2SF_CONFIG_TOML": FILE}
    settings = load_settings(None, env)
    assert settings.odata.page_size == 50 and settings.config_where == "R2SF_CONFIG_TOML"
    # A file named explicitly wins over the config var.
    (tmp_path / "other.toml").write_text("[odata]\npage_size = 7\n")
    assert load_settings(str(tmp_path / "other.toml"), env).odata.page_size == 7
    with pytest.raises(ConfigError) as bad:
        load_settings(None, {**env, "R2SF_CONFIG_TOML": "[odata]\npage_size = 0\n"})
    assert str(bad.value).startswith("R2SF_CONFIG_TOML: odata.page_size: ")


def test_the_console_credential_must_differ_from_salesforces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"DATABASE_URL": "postgresql://localhost/x", "ODATA_CREDENTIALS": "sf:secret"}
    with pytest.raises(ConfigError) as same:
        load_settings(None, {**env, "ADMIN_CREDENTIALS": "sf:secret"})
    assert same.value.where == "ADMIN_CREDENTIALS" and "secret" not in str(same.value)
    with pytest.raises(ConfigError) as malformed:
        load_settings(None, {**env, "ADMIN_CREDENTIALS": "admin"})
    assert str(malformed.value).startswith("ADMIN_CREDENTIALS: entry 1 is not of the form")


def test_the_console_is_off_without_an_admin_credential(db: str) -> None:
    with serve(db, "[odata]\nexpose = []\n") as (base, _app):
        r = httpx.get(base + "/admin/jobs", auth=("sf", "secret"), timeout=10)
        status = httpx.get(base + "/", auth=("sf", "secret"), timeout=10)
    assert r.status_code == 404 and "ADMIN_CREDENTIALS" in r.text
    assert status.status_code == 200  # the status page keeps working with the OData credential


def test_the_console_refuses_the_odata_credential_and_forged_posts(db: str) -> None:
    with (
        contextlib.ExitStack() as stack,
        serve(db, "[odata]\nexpose = []\n", admin="admin:pw") as (base, _app),
    ):
        admin = stack.enter_context(httpx.Client(base_url=base, auth=("admin", "pw"), timeout=10))
        salesforce = stack.enter_context(
            httpx.Client(base_url=base, auth=("sf", "secret"), timeout=10)
        )
        refused = salesforce.get("/admin/sets")
        assert refused.status_code == 401
        assert 'realm="r2sf console"' in refused.headers["www-authenticate"]
        assert salesforce.get("/").status_code == 401  # status now needs the admin credential
        assert admin.get("/odata/v4/").status_code == 401  # and the admin cannot read OData
        assert salesforce.get("/odata/v4/").status_code == 200
        page = admin.get("/admin/sets")
        assert page.status_code == 200
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert token is not None
        form = {"version": "0", "expose": "public.colours"}
        assert admin.post("/admin/sets", data=form).status_code == 403
        assert admin.post("/admin/sets", data={**form, "csrf": "0" * 64}).status_code == 403
        foreign = admin.post("/admin/sets", data={**form, "csrf": token.group(1)},
                             headers={"Origin": "https://evil.example"})  # fmt: skip
        assert foreign.status_code == 403
        assert versions(db) == []
        ok = admin.post("/admin/sets", data={**form, "csrf": token.group(1)})
        assert ok.status_code == 303
        assert versions(db)[0].saved_by == "admin"


def test_serve_applies_a_saved_version_and_a_roll_back_without_restart(fresh_db: str) -> None:
    run(_exec(fresh_db, SETUP))
    with (
        contextlib.ExitStack() as stack,
        serve(fresh_db, '[odata]\nexpose = ["public.hidden"]\n') as (base, app),
    ):
        client = httpx.Client(base_url=base + "/odata/v4", auth=("sf", "secret"), timeout=10)
        stack.enter_context(client)
        assert client.get("/Colour").status_code == 404
        doc = {"odata": {"expose": [], "sets": [{"table": "public.colours", "name": "Colour"}]},
               "sync": {}}  # fmt: skip
        first = run(_save(fresh_db, app.file_settings, doc, "added Colour"))
        body = _until(client, "/Colour?$orderby=id", 200)
        assert body["value"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
        _until(client, "/hidden", 404)  # the stored list replaced the file's
        other = {"odata": {"expose": ["public.hidden"], "sets": []}, "sync": {}}
        second = run(_save(fresh_db, app.file_settings, other, "hidden only"))
        _until(client, "/Colour", 404)
        back = run(_rollback(fresh_db, app.file_settings, first, second))
        assert back == second + 1
        _until(client, "/Colour", 200)
        assert client.get("/hidden").status_code == 404
    latest = versions(fresh_db)[0]
    assert latest.action == f"rolled back to version {first}"
    assert "+expose = []" in latest.diff and '-expose = ["public.hidden"]' in latest.diff


def test_the_scheduler_takes_jobs_saved_while_it_runs(fresh_db: str) -> None:
    job = {"name": "later", "query": "SELECT 1 AS id", "target": "public.later", "key": ["id"],
           "schedule": "* * * * *"}  # fmt: skip
    settings = load_settings(None, {"DATABASE_URL": fresh_db})
    assert run(stored_jobs(fresh_db, FileConfig(), -1)) is None  # nothing stored: the file's
    run(_save(fresh_db, settings, {"odata": {}, "sync": {"jobs": [job]}}, "added later"))
    version, jobs = run(stored_jobs(fresh_db, FileConfig(), -1))
    assert version == 1 and [j.name for j in jobs] == ["later"]
    assert run(stored_jobs(fresh_db, FileConfig(), 1)) is None  # unchanged since version 1

    async def scheduler() -> str:
        out = io.StringIO()
        stop = asyncio.Event()
        calls = 0

        async def refresh() -> list[Job] | None:
            nonlocal calls
            calls += 1
            if calls == 2:
                return jobs
            if calls > 2:
                stop.set()
            return None

        await run_scheduler([], fresh_db, fresh_db, reporter=Reporter(out, tty=False), stop=stop,
                            refresh=refresh, refresh_seconds=0.01)  # fmt: skip
        return out.getvalue()

    log = run(scheduler())
    assert "event=jobs_reloaded jobs=later" in log


def test_toml_written_for_the_store_reads_back_exactly() -> None:
    doc: dict[str, Any] = {
        "odata": {"expose": ["public.*"], "change_tracking": True, "sets": [
            {"table": "public.x", "name": "Ünïcode ✓", "key": ["a", "b"]}]},
        "sync": {"jobs": [{"name": "j", "query": 'SELECT \'a"b\\\\c\'\n\t; -- \x7f', "key": ["id"],
                           "columns": {"odd key": "x", "y": "z"}, "max_deletes": 5,
                           "incremental": {"column": "u", "lookback": "2 hours"},
                           "heroku_connect": {"external_id": "e__c", "scale": {"amt": 2}}}]},
    }  # fmt: skip
    assert tomllib.loads(config_store.to_toml(doc)) == doc


async def _exec(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _save(url: str, settings: Any, doc: dict[str, Any], action: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await config_store.save(conn, settings, doc, who="test", action=action,
                                       based_on=None)  # fmt: skip
    finally:
        await conn.close()


async def _rollback(url: str, settings: Any, to: int, newest: int) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await config_store.rollback(conn, settings, to, who="test", based_on=newest)
    finally:
        await conn.close()


def _until(client: httpx.Client, path: str, status: int) -> Any:
    deadline = time.monotonic() + 30
    while True:
        r = client.get(path)
        if r.status_code == status or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == status, r.text
    return r.json() if status == 200 else True


def test_a_job_written_as_a_query_previews_its_rows_and_maps_its_columns(fresh_db: str) -> None:
    run(_exec(fresh_db, SETUP + "CREATE TABLE public.paint (id int PRIMARY KEY, hue text);"))
    toml = f'[source]\nurl = "{fresh_db}"\n'
    with contextlib.ExitStack() as stack, serve(fresh_db, toml, admin="admin:pw") as (base, _):
        admin = stack.enter_context(httpx.Client(base_url=base, auth=("admin", "pw"), timeout=30))
        page = admin.get("/admin/jobs/new?query=1")
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert token is not None and 'name="query"' in page.text
        form = {"csrf": token.group(1), "version": "0", "original": "", "source_kind": "query",
                "name": "paint", "query": "SELECT id, upper(name) AS Hue FROM public.colours",
                "target": "public.paint", "key": "id", "create": "1"}  # fmt: skip
        preview = admin.post("/admin/jobs/save", data={**form, "action": "preview"})
        assert preview.status_code == 200
        assert "<td>RED</td>" in preview.text and "<td>GREEN</td>" in preview.text
        # `hue` exists in the target: matched by name (any case), its type shown.
        assert 'name="map.hue" value="hue"' in preview.text
        saved = admin.post("/admin/jobs/save", data={**form, "action": "save"})
        assert saved.status_code == 303
    stored = versions(fresh_db)[0].data["sync"]["jobs"]
    assert stored == [{"name": "paint", "query": form["query"], "target": "public.paint",
                       "key": ["id"]}]  # fmt: skip


def test_the_job_form_sets_how_a_run_compares_reads_and_rounds(fresh_db: str) -> None:
    """compare, fetch_size, lock_timeout and Heroku Connect's scale are set in the console as in
    r2sf.toml, shown again when the job is edited, and a bad value is refused on its field."""
    run(_exec(fresh_db, SETUP))
    toml = f'[source]\nurl = "{fresh_db}"\n'
    with contextlib.ExitStack() as stack, serve(fresh_db, toml, admin="admin:pw") as (base, _):
        admin = stack.enter_context(httpx.Client(base_url=base, auth=("admin", "pw"), timeout=30))
        page = admin.get("/admin/jobs/new?query=1")
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert token is not None
        form = {"csrf": token.group(1), "version": "0", "original": "", "source_kind": "query",
                "name": "deals", "query": "SELECT id, name FROM public.colours",
                "target": "salesforce.deal__c", "key": "id", "external_id": "r2sf_key__c",
                "scale": "amount__c=2, fee__c = 4", "compare": "full", "fetch_size": "5000",
                "lock_timeout": "15", "action": "save"}  # fmt: skip
        bad = admin.post("/admin/jobs/save", data={**form, "fetch_size": "0"})
        assert bad.status_code == 400 and "fetch_size" in bad.text
        assert re.search(r'name="fetch_size" value="0"[^>]*aria-invalid="true"', bad.text)
        saved = admin.post("/admin/jobs/save", data=form)
        assert saved.status_code == 303, saved.text
        edit = admin.get("/admin/jobs/deals")
        assert 'name="scale" value="amount__c=2, fee__c=4"' in edit.text
        assert '<option value="full" selected>' in edit.text
        assert 'name="fetch_size" value="5000"' in edit.text
        assert 'name="lock_timeout" value="15"' in edit.text
    stored = versions(fresh_db)[0].data["sync"]["jobs"][0]
    assert stored["heroku_connect"] == {"external_id": "r2sf_key__c",
                                        "scale": {"amount__c": 2, "fee__c": 4}}  # fmt: skip
    assert (stored["compare"], stored["fetch_size"], stored["lock_timeout"]) == ("full", 5000, 15)
    hc = Job.model_validate(stored).heroku_connect
    assert hc is not None and hc.scale == {"amount__c": 2, "fee__c": 4}
