"""Sync job configuration: valid jobs load with their defaults; every mistake is a ConfigError
naming the file, the key (`sync.jobs[0].deletes`) and a fix. No database needed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.config import ConfigError, FileConfig, load_settings
from sync.config import load_jobs, load_sync_settings, parse_sync_file, select_jobs, source_url

MINIMAL = """
[[sync.jobs]]
name = "category"
query = "select catid, catname from category"
target = "public.category_c"
key = ["catid"]
"""


def jobs_from(text: str) -> list:  # type: ignore[type-arg]
    return load_jobs(parse_sync_file(tomllib.loads(text), "r2sf.toml"), "r2sf.toml")


def error_for(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        jobs_from(text)
    return err.value


def test_minimal_job_gets_safe_defaults() -> None:
    (job,) = jobs_from(MINIMAL)
    assert job.deletes == "ignore"
    assert job.max_deletes.limit(1000) == 100  # 10%
    assert job.create is True and job.fetch_size is None  # chosen from the cluster
    assert (job.timeout, job.lock_timeout) == (3600, 60)


def test_the_issue_example_loads() -> None:
    (job,) = jobs_from(
        MINIMAL
        + """schedule = "*/15 * * * *"
deletes = "hard"
max_deletes = "10%"
incremental = { column = "updated_at" }
columns = { catname = "name" }
"""
    )
    assert job.schedule == "*/15 * * * *" and job.incremental is not None
    assert job.target_column("catname") == "name" and job.target_column("catid") == "catid"


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('deletes = "sometimes"', "sync.jobs[0].deletes", '"hard", "soft"'),
        ('deletes = "soft"', "sync.jobs[0]", "soft_delete_column"),
        ('max_deletes = "lots"', "sync.jobs[0].max_deletes", "percentage"),
        ('max_deletes = "150%"', "sync.jobs[0].max_deletes", "percentage"),
        ('schedule = "every hour"', "sync.jobs[0].schedule", "cron"),
        ("batch_size = 0", "sync.jobs[0].batch_size", "greater than or equal to 1"),
        ('delets = "hard"', "sync.jobs[0].delets", "did you mean 'deletes'"),
        ('table = "public.category"', "sync.jobs[0]", "exactly one of `query` or `table`"),
        ('incremental = { col = "x" }', "sync.jobs[0].incremental.col", "did you mean 'column'"),
        ('columns = { "a b" = "c" }', "sync.jobs[0].columns", "not a plain column name"),
    ],
)
def test_mistakes_name_the_key_and_the_fix(extra: str, key: str, words: str) -> None:
    err = error_for(MINIMAL + extra + "\n")
    assert err.where == f"r2sf.toml: {key}"
    assert words in str(err)
    assert "Fix:" in str(err)


def test_target_must_be_schema_qualified() -> None:
    err = error_for(MINIMAL.replace("public.category_c", "category_c"))
    assert err.where == "r2sf.toml: sync.jobs[0].target" and "public.category_c" in str(err)


def test_duplicate_job_names_are_refused() -> None:
    err = error_for(MINIMAL + MINIMAL)
    assert err.where == "r2sf.toml: sync.jobs[1].name"


def test_heroku_connect_key_must_map_to_the_external_id() -> None:
    (job,) = jobs_from(MINIMAL + 'heroku_connect = { external_id = "catid__c" }\n')
    assert job.target_column("catid") == "catid__c"
    err = error_for(
        MINIMAL + 'heroku_connect = { external_id = "catid__c" }\ncolumns = { catid = "x__c" }\n'
    )
    assert "external_id" in str(err)


def test_heroku_connect_jobs_may_not_write_system_columns() -> None:
    err = error_for(
        MINIMAL + 'heroku_connect = { external_id = "catid__c" }\ncolumns = { catname = "sfid" }\n'
    )
    assert "sfid" in str(err) and "never written" in str(err)


def test_max_deletes_accepts_counts_and_percentages() -> None:
    (job,) = jobs_from(MINIMAL + "max_deletes = 25\n")
    assert job.max_deletes.limit(10_000) == 25
    (job,) = jobs_from(MINIMAL + 'max_deletes = "2.5%"\n')
    assert job.max_deletes.limit(1000) == 25


def test_unknown_job_names_get_a_suggestion() -> None:
    jobs = jobs_from(MINIMAL)
    with pytest.raises(ConfigError) as err:
        select_jobs(jobs, ["categroy"])
    assert "did you mean 'category'" in str(err.value)
    assert select_jobs(jobs, []) == jobs


def test_source_url_comes_from_the_environment_before_the_file() -> None:
    file = FileConfig.model_validate({"source": {"url": "redshift://u:p@file:5439/dev"}})
    assert source_url(file, environ={}) == "redshift://u:p@file:5439/dev"
    env = {"REDSHIFT_URL": "postgresql://u@env/db"}
    assert source_url(file, environ=env) == "postgresql://u@env/db"
    with pytest.raises(ConfigError) as err:
        source_url(FileConfig(), environ={})
    assert err.value.where == "REDSHIFT_URL"
    with pytest.raises(ConfigError) as err:
        source_url(FileConfig(), environ={"REDSHIFT_URL": "mysql://x/y"})
    assert "not supported" in str(err.value)


def test_sync_settings_ignore_what_only_the_service_reads(tmp_path: Path) -> None:
    # A bad [odata] section, ODATA_CREDENTIALS or PORT must not stop `r2sf sync` or the scheduler.
    path = tmp_path / "r2sf.toml"
    path.write_text(MINIMAL + "\n[odata]\npage_size = 0\n", encoding="utf-8")
    env = {"DATABASE_URL": "postgresql://u@localhost/db", "PORT": "http",
           "ODATA_CREDENTIALS": "no-colon"}  # fmt: skip
    settings = load_sync_settings(str(path), env)
    assert [j.name for j in load_jobs(settings.file)] == ["category"]
    assert settings.database_url == "postgresql://u@localhost/db"
    with pytest.raises(ConfigError) as err:
        load_settings(str(path), env)  # the service reads them all, and refuses
    assert "odata.page_size" in str(err.value)


def test_a_bad_sync_section_stops_the_service_too(tmp_path: Path) -> None:
    path = tmp_path / "r2sf.toml"
    path.write_text(MINIMAL + 'deletes = "sometimes"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(str(path), {"DATABASE_URL": "postgresql://u@localhost/db"})
    assert err.value.where == f"{path}: sync.jobs[0].deletes"
    assert err.value.fix.startswith('use "hard", "soft"')  # the sync's own advice


def test_duplicate_job_names_stop_every_command(tmp_path: Path) -> None:
    path = tmp_path / "r2sf.toml"
    path.write_text(MINIMAL + MINIMAL, encoding="utf-8")
    env = {"DATABASE_URL": "postgresql://u@localhost/db"}
    for load in (load_settings, load_sync_settings):
        with pytest.raises(ConfigError) as err:
            load(str(path), env)
        assert err.value.where == f"{path}: sync.jobs[1].name"
