"""Sync job configuration: the `[source]` and `[[sync.jobs]]` sections of r2sf.toml, validated.

Turns raw TOML dicts into typed `Job` objects once, at start-up, and reports any problem as a
`ConfigError` naming the file, the key (`r2sf.toml: sync.jobs[0].deletes`) and the fix. The sync
commands load only these sections (`load_sync_settings`); service/config.py composes them into
the whole file. It never connects to a database; checks that need the target's catalogue happen
in `sync.load`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from odata.ident import ident
from sync import warehouse
from sync.settings import (
    ConfigError,
    database_url,
    explain_validation,
    read_config,
    read_toml,
)

# A plain (unquoted-safe) SQL name: what job keys may name. Anything else is almost always a typo.
_NAME = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUALIFIED = re.compile(rf"{_NAME}\.{_NAME}")
_COLUMN = re.compile(_NAME)
_JOB_NAME = re.compile(r"[A-Za-z0-9_.-]+")

# Heroku Connect owns these columns of a mapped table (spec §9); the sync never writes them.
HEROKU_CONNECT_SYSTEM_COLUMNS = frozenset(
    {"id", "sfid", "systemmodstamp", "createddate", "isdeleted", "_hc_lastop", "_hc_err"}
)

# Rows a Heroku Connect job may write in one run unless told otherwise: about 15 minutes of
# Heroku Connect pushing at 55-65 records/s.
HC_MAX_CHANGES = 50_000

DEFAULT_BATCH_SIZE = 10_000
# Single-node Redshift clusters refuse a FETCH of more than 1,000 rows; without a fetch_size the
# extract chooses from the cluster's node count (sync/redshift.py).
DEFAULT_FETCH_SIZE = 1_000
# A run still going after this many seconds is stopped, rolled back and recorded as failed.
DEFAULT_TIMEOUT = 3600
# Seconds a statement on the target waits for a table lock (another writer, an ALTER TABLE...).
DEFAULT_LOCK_TIMEOUT = 60
_LOOKBACK = re.compile(r"\s*(\d+)\s*(second|minute|hour|day|week)s?\s*", re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Incremental(_Strict):
    column: str = Field(description="source column; only rows above the last watermark are read")
    # Also re-read rows this far below the watermark: rows that commit late with an older value.
    # A number for number columns, "2 hours" (second, minute, hour, day, week) for dates/times.
    lookback: int | str | None = None

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return _column_name(v)

    @field_validator("lookback", mode="before")
    @classmethod
    def _lookback(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, int) and v < 0):
            raise ValueError('lookback is a positive number or a duration such as "2 hours"')
        if isinstance(v, str):
            m = _LOOKBACK.fullmatch(v)
            if m is None:
                raise ValueError(
                    f"'{v}' is not a duration: write a number and second, minute, hour, day or"
                    ' week, e.g. "2 hours"'
                )
            return f"{m.group(1)} {m.group(2).lower()}s"
        return v


class HerokuConnect(_Strict):
    external_id: str = Field(description="the mapping's unique External ID column in the target")
    scale: dict[str, int] = Field(
        default_factory=dict,
        description="decimal places Salesforce keeps for a double precision column",
    )

    @field_validator("external_id")
    @classmethod
    def _column(cls, v: str) -> str:
        return _column_name(v)

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: dict[str, int]) -> dict[str, int]:
        for column, places in v.items():
            _column_name(column)
            if not 0 <= places <= 18:
                raise ValueError(f"scale of '{column}' must be the field's decimal places, 0 to 18")
        return v


class MaxDeletes(_Strict):
    """At most `count` rows, or `percent` of the target's rows, may be deleted by one run."""

    count: int | None = None
    percent: float | None = None

    def limit(self, target_rows: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return int(target_rows * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


class Job(_Strict):
    name: str
    query: str | None = None
    table: str | None = None
    target: str
    key: list[str] = Field(min_length=1)
    schedule: str | None = None
    deletes: Literal["hard", "soft", "ignore"] = "ignore"
    soft_delete_column: str | None = None
    max_deletes: MaxDeletes = Field(default_factory=lambda: MaxDeletes(percent=10))
    # Rows one run may write (inserts + updates + deletes); None: HC_MAX_CHANGES for Heroku
    # Connect jobs, no limit otherwise.
    max_changes: int | None = Field(None, ge=0)
    incremental: Incremental | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    heroku_connect: HerokuConnect | None = None
    create: bool = True
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=1_000_000)
    # None: chosen from the cluster (1,000 on single-node or unknown clusters, 10,000 otherwise).
    fetch_size: int | None = Field(None, ge=1, le=1_000_000)
    timeout: int = Field(DEFAULT_TIMEOUT, ge=1, le=7 * 86400)
    lock_timeout: int = Field(DEFAULT_LOCK_TIMEOUT, ge=1, le=86400)
    # cron (UTC): the first run after each of these times reads everything and applies deletes.
    full_refresh: str | None = None
    # How a rerun finds what changed (sync/fingerprint.py): "fingerprints" compares per-bucket
    # summaries of both sides first and reads only the differing buckets in full; "auto" does
    # so once the target has 50,000 rows; "full" reads every row.
    compare: Literal["auto", "fingerprints", "full"] = "auto"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _JOB_NAME.fullmatch(v):
            raise ValueError(f"'{v}' may use only letters, digits, '_', '-' and '.'")
        return v

    @field_validator("table", "target")
    @classmethod
    def _qualified(cls, v: str | None) -> str | None:
        if v is not None and not _QUALIFIED.fullmatch(v):
            raise ValueError(f"'{v}' must be written schema.table, e.g. public.{v}")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str]) -> list[str]:
        return [_column_name(c) for c in v]

    @field_validator("soft_delete_column")
    @classmethod
    def _soft_column(cls, v: str | None) -> str | None:
        return None if v is None else _column_name(v)

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        for src, dst in v.items():
            _column_name(src)
            _column_name(dst)
        return v

    @field_validator("schedule", "full_refresh")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"'{v}' is not a cron expression (minute hour day month weekday)")
        return v

    @field_validator("max_deletes", mode="before")
    @classmethod
    def _max_deletes(cls, v: Any) -> Any:
        return parse_max_deletes(v)

    @model_validator(mode="after")
    def _consistent(self) -> Job:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of `query` or `table`")
        if self.deletes == "soft" and self.soft_delete_column is None:
            raise ValueError(
                'deletes = "soft" needs soft_delete_column, e.g. soft_delete_column = "is_deleted"'
            )
        if self.heroku_connect is not None:
            if len(self.key) != 1:
                raise ValueError(
                    "a Heroku Connect job has one key column: the External ID's source"
                )
            mapped = self.columns.get(self.key[0], self.heroku_connect.external_id)
            if mapped != self.heroku_connect.external_id:
                raise ValueError(
                    f"key '{self.key[0]}' maps to '{mapped}', not to the external_id "
                    f"'{self.heroku_connect.external_id}'"
                )
            written = set(self.columns.values()) | {self.soft_delete_column}
            system = sorted(c for c in written if c in HEROKU_CONNECT_SYSTEM_COLUMNS)
            if system:
                raise ValueError(
                    f"{', '.join(system)} belong to Heroku Connect and are never written"
                )
        return self

    @property
    def change_budget(self) -> int | None:
        """Rows one run may write, or None for no limit."""
        if self.max_changes is not None:
            return self.max_changes
        return HC_MAX_CHANGES if self.heroku_connect is not None else None

    @property
    def source_sql(self) -> str:
        """The statement whose rows this job copies."""
        if self.query is not None:
            return self.query.strip().rstrip(";")
        assert self.table is not None
        schema, table = self.table.split(".")
        return f"SELECT * FROM {ident(schema)}.{ident(table)}"

    @property
    def target_schema(self) -> str:
        return self.target.split(".")[0]

    @property
    def target_table(self) -> str:
        return self.target.split(".")[1]

    def target_column(self, source_column: str) -> str:
        """The target column a source column is explicitly (or by the key rule) mapped to."""
        if source_column in self.columns:
            return self.columns[source_column]
        if self.heroku_connect is not None and source_column == self.key[0]:
            return self.heroku_connect.external_id
        return source_column


class SourceConfig(_Strict):
    """`[source]`: the URL and the connection options of sync/warehouse.py (REDSHIFT_URL's own
    query parameters win over these keys)."""

    url: str | None = Field(None, description="warehouse URL; REDSHIFT_URL overrides it")
    sslmode: str | None = None
    iam: bool | None = None
    cluster_identifier: str | None = None
    db_user: str | None = None
    db_groups: list[str] | None = None
    auto_create: bool | None = None
    region: str | None = None
    profile: str | None = None
    workgroup: str | None = None
    serverless_acct_id: str | None = None
    connect_timeout: int | None = Field(None, ge=1, le=600)

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "url" and v is not None}


class SyncConfig(_Strict):
    jobs: list[Job] = Field(default_factory=list)
    # Called with a JSON POST when a job fails and when it recovers (R2SF_ALERT_WEBHOOK wins).
    alert_webhook: str | None = None


def _column_name(v: str) -> str:
    if not _COLUMN.fullmatch(v):
        raise ValueError(f"'{v}' is not a plain column name (letters, digits, '_')")
    return v


def parse_max_deletes(v: Any) -> Any:
    if isinstance(v, MaxDeletes | dict):
        return v
    if isinstance(v, bool):
        raise ValueError('max_deletes is a count (e.g. 500) or a percentage (e.g. "10%")')
    if isinstance(v, int):
        if v < 0:
            raise ValueError("max_deletes must not be negative")
        return MaxDeletes(count=v)
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", v)
        if m and float(m.group(1)) <= 100:
            return MaxDeletes(percent=float(m.group(1)))
        if v.strip().isdigit():
            return MaxDeletes(count=int(v))
    raise ValueError(f"'{v}' is neither a count (e.g. 500) nor a percentage (e.g. \"10%\")")


_FIELD_FIXES = {
    "deletes": 'use "hard", "soft" (with soft_delete_column) or "ignore"',
    "schedule": 'write five cron fields in UTC, e.g. "*/15 * * * *"',
    "max_deletes": 'write a count (500) or a percentage ("10%")',
    "target": "write the target as schema.table, e.g. public.category",
    "table": "write the source table as schema.table, e.g. public.category",
    "key": 'list the key columns, e.g. key = ["catid"]',
    "max_changes": "write a row count, e.g. max_changes = 50000",
    "scale": "write decimal places per column, e.g. scale = { amount__c = 2 }",
    "full_refresh": 'write five cron fields in UTC, e.g. "0 3 * * 0" (Sundays 03:00)',
    "lookback": 'write a number (number columns) or a duration, e.g. "2 hours"',
    "timeout": "write seconds, e.g. timeout = 3600",
    "lock_timeout": "write seconds, e.g. lock_timeout = 60",
}


# Keyed `section.field`, so `[[odata.sets]] table` keeps its own advice.
FIXES = {f"{section}.{k}": v for section in ("sync", "source") for k, v in _FIELD_FIXES.items()}


class SyncSections(Protocol):
    """What the sync reads of r2sf.toml: service's FileConfig and `SyncFile` both are one."""

    @property
    def source(self) -> SourceConfig: ...

    @property
    def sync(self) -> SyncConfig: ...


class SyncFile(BaseModel):
    """The `[source]` and `[sync]` sections alone; the other sections are not the sync's to read."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    source: SourceConfig = Field(default_factory=SourceConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)


@dataclass(frozen=True)
class SyncSettings:
    """Everything `r2sf sync` and the scheduler need: the file's sections and the target."""

    config_path: Path | None
    file: SyncFile
    database_url: str
    name: str = ""  # where the file came from when it is not a path: "R2SF_CONFIG_TOML"

    @property
    def where(self) -> str:
        return self.name or str(self.config_path or "r2sf.toml")


def parse_sync_file(raw: Mapping[str, Any], where: str | Path = "r2sf.toml") -> SyncFile:
    """Validate the sync's sections of an already-read r2sf.toml (a ConfigError names the key)."""
    try:
        file = SyncFile.model_validate(raw)
    except ValidationError as exc:
        raise explain_validation(where, exc, SyncFile, fixes=FIXES) from None
    check_sync(file.sync, str(where))
    return file


def load_sync_file(path: Path | None) -> SyncFile:
    return parse_sync_file(read_toml(path), path or "r2sf.toml")


def load_sync_settings(
    explicit_config: str | None = None, environ: Mapping[str, str] | None = None
) -> SyncSettings:
    """The sync's settings only: r2sf.toml's [source]/[sync] and DATABASE_URL (no OData ones)."""
    env = os.environ if environ is None else environ
    path, where, raw = read_config(explicit_config, env)
    return SyncSettings(path, parse_sync_file(raw, where), database_url(env), where)


def check_sync(sync: SyncConfig, where: str) -> None:
    """What one field cannot check: every job has its own name."""
    seen: dict[str, int] = {}
    for i, job in enumerate(sync.jobs):
        if job.name in seen:
            raise ConfigError(
                f"{where}: sync.jobs[{i}].name",
                f"job name '{job.name}' is already used by sync.jobs[{seen[job.name]}]",
                "give every job its own name",
            )
        seen[job.name] = i


def load_jobs(file: SyncSections, path: Path | str | None = None) -> list[Job]:
    """The validated jobs of `[[sync.jobs]]`, with unique names."""
    check_sync(file.sync, str(path or "r2sf.toml"))
    return list(file.sync.jobs)


def select_jobs(jobs: list[Job], names: list[str], where: str = "r2sf.toml") -> list[Job]:
    """The jobs named (all when none are), refusing unknown names with a suggestion."""
    if not names:
        return list(jobs)
    by_name = {j.name: j for j in jobs}
    chosen = []
    for name in names:
        if name not in by_name:
            guess = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else "known: " + ", ".join(by_name)
            raise ConfigError(
                f"{where}: sync.jobs",
                f"no job named '{name}'",
                f"use one of the configured job names ({hint or 'none configured'})",
            )
        chosen.append(by_name[name])
    return chosen


def source_url(file: SyncSections, path: Path | str | None = None, environ: Any = None) -> str:
    """The warehouse URL: REDSHIFT_URL, else `[source] url`."""
    env = os.environ if environ is None else environ
    where = str(path or "r2sf.toml")
    source = file.source
    from_env = bool(env.get("REDSHIFT_URL"))
    url: str | None = env.get("REDSHIFT_URL") or source.url
    if not url:
        raise ConfigError(
            "REDSHIFT_URL",
            "not set, and r2sf.toml has no [source] url",
            "export REDSHIFT_URL=redshift://user:password@host:5439/dbname",
        )
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("redshift", "postgresql", "postgres"):
        raise ConfigError(
            "REDSHIFT_URL" if env.get("REDSHIFT_URL") else f"{where}: source.url",
            f"scheme '{scheme}' is not supported",
            "use redshift://user:password@host:5439/db or postgresql://user:password@host/db",
        )
    url = warehouse.merge_options(url, source.options())
    try:
        warehouse.check_options(url)
    except warehouse.OptionError as exc:
        in_url = exc.key in dict(parse_qsl(urlsplit(url).query)) and exc.key not in source.options()
        where_key = (
            f"REDSHIFT_URL ?{exc.key}" if in_url and from_env else f"{where}: source.{exc.key}"
        )
        raise ConfigError(where_key, exc.problem, exc.fix) from None
    return url


def alert_webhook(
    file: SyncSections, path: Path | str | None = None, environ: Any = None
) -> str | None:
    """The URL to POST failure and recovery alerts to: R2SF_ALERT_WEBHOOK, else [sync]."""
    env = os.environ if environ is None else environ
    url: str | None = env.get("R2SF_ALERT_WEBHOOK") or file.sync.alert_webhook
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(
            "R2SF_ALERT_WEBHOOK"
            if env.get("R2SF_ALERT_WEBHOOK")
            else f"{path}: sync.alert_webhook",
            f"'{url.split('?')[0]}' is not an http(s) URL",
            "give the webhook's https:// URL (a Slack incoming webhook, for one)",
        )
    return url or None
