"""Configuration: `r2sf.toml` for what the service does, the environment for secrets and URLs.

Everything the service needs is validated once, at start-up, into one typed `Settings` object:
the `[odata]` and `[server]` sections are defined here, the sync's sections by sync/config.py,
and the shared plumbing (`ConfigError`, the file, DATABASE_URL, `redact_url`) lives in
sync/settings.py. A bad file or value raises `ConfigError` naming the file, the key and the fix;
nothing here ever prints a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from odata.catalog import SetOptions
from odata.service import ServiceConfig
from sync import config as sync_config
from sync.config import SourceConfig, SyncConfig
from sync.settings import (
    DEFAULT_CONFIG,
    ConfigError,
    config_path,
    database_url,
    explain_validation,
    normalise_database_url,
    parse_toml,
    read_config,
    read_toml,
    redact_url,
)

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "Credential",
    "FileConfig",
    "ODataConfig",
    "ServerConfig",
    "SetConfig",
    "Settings",
    "config_path",
    "database_url",
    "explain_validation",
    "load_config",
    "load_file",
    "load_settings",
    "load_text",
    "normalise_database_url",
    "parse_credentials",
    "parse_toml",
    "redact_url",
    "service_config",
    "validate_file",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetConfig(_Strict):
    table: str = Field(description="schema.table (or view) this entry configures")
    name: str | None = Field(None, description="entity set name; default: the table name")
    key: list[str] | None = Field(
        None, description="key columns; required for a view without a unique `id`"
    )
    read_only: bool = False
    change_tracking: bool | None = Field(
        None, description="Salesforce change tracking for this table; default: [odata]'s"
    )

    @field_validator("table")
    @classmethod
    def _qualified(cls, v: str) -> str:
        if v.count(".") != 1:
            raise ValueError(f"'{v}' must be written schema.table, e.g. public.{v}")
        return v


class ODataConfig(_Strict):
    path: str = "/odata/v4"
    page_size: int = Field(1000, ge=1, le=2000)
    # Salesforce refuses responses over 8 MB (8,000,000 bytes here, to be safe): the budget is
    # for the rows' JSON, and the envelope (context, count, a nextLink with a 32 KB filter) fits
    # in what the upper bound leaves.
    max_page_bytes: int = Field(
        6_000_000,
        ge=1000,
        le=7_500_000,
        description="end a page before its rows' JSON exceeds this many bytes",
    )
    expose: list[str] = Field(default_factory=lambda: ["public.*"])
    sets: list[SetConfig] = Field(default_factory=list)
    case_insensitive_match: bool = True
    reload_seconds: float = Field(
        0, ge=0, description="re-read the catalogue this often; 0 = only on SIGHUP"
    )
    unsupported_types: Literal["string", "omit"] = "string"
    csrf: bool = Field(False, description="require Salesforce's CSRF token on writes")
    track_changes: bool = Field(
        True, description="install change triggers so responses can be cached exactly"
    )
    change_tracking: bool = Field(
        False, description="delta links for Salesforce's Track Data Changes, on every table"
    )
    change_retention: str = Field("7d", description="how long the change log keeps a change")

    @field_validator("change_retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        from odata.changes import parse_retention

        if parse_retention(v) < 3600:
            raise ValueError(f"'{v}' is shorter than an hour; Salesforce polls every 30 minutes")
        return v

    @property
    def change_retention_s(self) -> int:
        from odata.changes import parse_retention

        return parse_retention(self.change_retention)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", v):
            raise ValueError(
                f"'{v}' must be an absolute URL path like /odata/v4, without a trailing slash"
            )
        return v


class ServerConfig(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    workers: int | None = Field(None, ge=1)
    pool_size: int = Field(10, ge=1, le=200)
    statement_timeout_s: int = Field(30, ge=1, le=3600, description="cancel slower queries (503)")
    cache_min_uses: int = Field(
        2,
        ge=1,
        le=100,
        description="keep an answer once its URL was asked this often per data version",
    )
    cache_mb: int = Field(64, ge=0, le=65536, description="response cache per worker; 0 = off")
    # A follower (streaming read replica) for OData reads; DATABASE_FOLLOWER_URL wins.
    read_url: str | None = Field(None, description="follower URL for reads")
    # Behind Heroku's router a request that says `X-Forwarded-Proto: http` came in over plain
    # HTTP: Basic credentials crossed the internet in clear text, so it is refused (403).
    require_https: bool = True


class FileConfig(_Strict):
    odata: ODataConfig = Field(default_factory=ODataConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    # The sync's sections, typed by sync/config.py (which owns them) and validated here too, so
    # `serve`, `status` and `check` see the same errors as `r2sf sync`.
    source: SourceConfig = Field(default_factory=SourceConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)


@dataclass(frozen=True)
class Credential:
    user: str
    password: str


@dataclass(frozen=True)
class Settings:
    config_path: Path | None
    file: FileConfig
    database_url: str
    credentials: tuple[Credential, ...]
    port: int
    # DATABASE_CONNECTION_POOL_URL: PgBouncer in transaction mode in front of the primary.
    pool_url: str | None = None
    # DATABASE_FOLLOWER_URL or [server] read_url: a streaming replica of the primary.
    follower_url: str | None = None
    # ADMIN_CREDENTIALS: who may use the console at /admin (off when empty).
    admin_credentials: tuple[Credential, ...] = ()
    # Where the file part came from, for messages: a path, "R2SF_CONFIG_TOML", or "r2sf.toml".
    config_where: str = "r2sf.toml"

    @property
    def write_url(self) -> str:
        """Where OData writes, catalogue loads and the change log go: the primary, pooled if
        a pooler is configured."""
        return self.pool_url or self.database_url

    @property
    def read_url(self) -> str:
        """Where OData reads go: the follower, else the pooler, else the primary."""
        return self.follower_url or self.write_url

    @property
    def odata(self) -> ODataConfig:
        return self.file.odata


def parse_credentials(raw: str, var: str = "ODATA_CREDENTIALS") -> tuple[Credential, ...]:
    creds: list[Credential] = []
    for i, item in enumerate(x.strip() for x in raw.split(",")):
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                var,
                f"entry {i + 1} is not of the form user:password",
                f"set {var}=user:password (comma-separated for several users)",
            )
        creds.append(Credential(user, password))
    return tuple(creds)


def validate_file(raw: Mapping[str, Any], where: str) -> FileConfig:
    """The one validation of r2sf.toml, every section (the sync's by sync/config.py's models),
    wherever the TOML came from: a file, R2SF_CONFIG_TOML, the console, `r2sf config import`."""
    try:
        file = FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise explain_validation(where, exc, FileConfig, fixes=sync_config.FIXES) from None
    sync_config.check_sync(file.sync, where)
    return file


def load_file(path: Path | None) -> FileConfig:
    """The whole r2sf.toml, every section validated."""
    return validate_file(read_toml(path), str(path or DEFAULT_CONFIG))


def load_text(text: str, where: str) -> FileConfig:
    """r2sf.toml given as text; `where` names it in messages."""
    return validate_file(parse_toml(text, where), where)


def load_config(
    explicit: str | None, env: Mapping[str, str]
) -> tuple[Path | None, str, FileConfig]:
    """(path, its name for messages, validated file): see sync/settings.py `read_config`."""
    path, where, raw = read_config(explicit, env)
    return path, where, validate_file(raw, where)


def load_settings(
    explicit_config: str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    env = dict(os.environ if environ is None else environ)
    path, where, file = load_config(explicit_config, env)
    target_url = database_url(env)
    port_raw = env.get("PORT")
    port = file.server.port
    if port_raw:
        if not (port_raw.isascii() and port_raw.isdigit()) or not 0 < int(port_raw) < 65536:
            raise ConfigError(
                "PORT",
                f"'{port_raw}' is not a TCP port",
                "set PORT to a number between 1 and 65535",
            )
        port = int(port_raw)
    cache_raw = env.get("R2SF_CACHE_MB")
    if cache_raw:
        if not cache_raw.isdigit():
            raise ConfigError(
                "R2SF_CACHE_MB",
                f"'{cache_raw}' is not a number of megabytes",
                "use 0 to turn the cache off, or e.g. 64",
            )
        file = file.model_copy(
            update={"server": file.server.model_copy(update={"cache_mb": int(cache_raw)})}
        )
    pool_raw = env.get("DATABASE_CONNECTION_POOL_URL")
    follower_raw = env.get("DATABASE_FOLLOWER_URL") or file.server.read_url
    follower_var = (
        "DATABASE_FOLLOWER_URL" if env.get("DATABASE_FOLLOWER_URL") else "[server] read_url"
    )
    credentials = parse_credentials(env.get("ODATA_CREDENTIALS", ""))
    admins = parse_credentials(env.get("ADMIN_CREDENTIALS", ""), "ADMIN_CREDENTIALS")
    if set(admins) & set(credentials):
        raise ConfigError(
            "ADMIN_CREDENTIALS",
            "an entry is also in ODATA_CREDENTIALS, so Salesforce's credential could change"
            " the configuration",
            "give the console its own user and password",
        )
    return Settings(
        config_path=path,
        file=file,
        database_url=target_url,
        credentials=credentials,
        port=port,
        admin_credentials=admins,
        config_where=where,
        pool_url=(
            normalise_database_url(pool_raw, "DATABASE_CONNECTION_POOL_URL") if pool_raw else None
        ),
        follower_url=(normalise_database_url(follower_raw, follower_var) if follower_raw else None),
    )


def service_config(settings: Settings) -> ServiceConfig:
    """What the OData layer needs of the settings (the exposure part may come from the stored
    configuration)."""
    o = settings.odata
    return ServiceConfig(
        expose=tuple(o.expose),
        sets=tuple(
            SetOptions(
                s.table, s.name, tuple(s.key) if s.key else None, s.read_only, s.change_tracking
            )
            for s in o.sets
        ),
        page_size=o.page_size,
        case_insensitive=o.case_insensitive_match,
        max_page_bytes=o.max_page_bytes,
        unsupported_types=o.unsupported_types,
        change_tracking=o.change_tracking,
        change_retention_s=o.change_retention_s,
    )
