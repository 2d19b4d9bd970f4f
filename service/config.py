"""Configuration: `r2sf.toml` for what the service does, the environment for secrets and URLs.

Everything is validated once, at start-up, into one typed `Settings` object. A bad file or value
raises `ConfigError` naming the file, the key and the fix; nothing here ever prints a secret.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONFIG = "r2sf.toml"


class ConfigError(Exception):
    """A configuration problem, phrased as `where: what. Fix: how`."""

    def __init__(self, where: str, problem: str, fix: str) -> None:
        super().__init__(f"{where}: {problem}. Fix: {fix}")
        self.where = where
        self.problem = problem
        self.fix = fix


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
    # Sections owned by other parts (sync/, demo) are validated by those parts.
    source: dict[str, Any] = Field(default_factory=dict)
    sync: dict[str, Any] = Field(default_factory=dict)


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


_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1", "[::1]"})


def normalise_database_url(url: str, variable: str = "DATABASE_URL") -> str:
    """Accept Heroku's `postgres://` scheme and SQLAlchemy-style driver suffixes; require SSL.

    Heroku Postgres is reached over the internet, so a remote host gets `sslmode=require` unless
    the URL already chooses (`sslmode=disable` turns it off). Local hosts and unix sockets
    (no host, or a `host=/path` parameter) are left alone: they have no TLS to negotiate.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme != "postgresql":
        raise ConfigError(
            variable,
            f"scheme '{parts.scheme}' is not a PostgreSQL URL",
            f"set {variable} to postgresql://user:password@host:5432/dbname",
        )
    parts = parts._replace(scheme=scheme)
    if _is_remote(parts.netloc, parts.query):
        query = parts.query + ("&" if parts.query else "") + "sslmode=require"
        parts = parts._replace(query=query)
    return urlunsplit(parts)


def _is_remote(netloc: str, query: str) -> bool:
    """True when the URL reaches a TCP host other than this machine and sets no SSL option."""
    params = parse_qsl(query, keep_blank_values=True)
    if any(k in ("sslmode", "ssl") for k, _ in params):
        return False
    hosts = [v for k, v in params if k == "host"]
    if not hosts:
        # `user:pass@h1:5432,h2:5432`: libpq's multi-host form, so split by hand.
        hosts = [unquote(_host_of(h)) for h in netloc.rpartition("@")[2].split(",")]
    names = [n for h in hosts for n in h.split(",")]
    return any(not n.startswith("/") and n.lower() not in _LOCAL_HOSTS for n in names)


def _host_of(hostport: str) -> str:
    if hostport.startswith("["):  # [::1]:5432
        return hostport[1 : hostport.find("]")]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_credentials(raw: str) -> tuple[Credential, ...]:
    creds: list[Credential] = []
    for i, item in enumerate(x.strip() for x in raw.split(",")):
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                "ODATA_CREDENTIALS",
                f"entry {i + 1} is not of the form user:password",
                "set ODATA_CREDENTIALS=user:password (comma-separated for several users)",
            )
        creds.append(Credential(user, password))
    return tuple(creds)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def explain_validation(
    where: str | Path,
    exc: ValidationError,
    model: type[BaseModel],
    *,
    prefix: tuple[str, ...] = (),
    fixes: Mapping[str, str] | None = None,
) -> ConfigError:
    """A pydantic error as `file: key: problem. Fix: ...`, with "did you mean" for typos.

    `prefix` is where `model` sits in the file (e.g. ("sync",)); `fixes` maps a field name to a
    more precise fix than the generic one.
    """
    errors = exc.errors()
    # A misspelt key also makes the real one "missing"; the misspelling is the useful report.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    key = _key_path((*prefix, *loc))
    if err["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"known keys here: {', '.join(known)}"
        return ConfigError(f"{where}: {key}", "unknown key", f"remove it or rename it ({hint})")
    msg = err["msg"].removeprefix("Value error, ")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    fix = (fixes or {}).get(field, "correct the value (see README, Configuration)")
    return ConfigError(f"{where}: {key}", msg, fix)


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed at `loc` inside `model` (through lists and optional sub-models)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        args: tuple[Any, ...] = getattr(ann, "__args__", ())
        current = next(
            (
                a
                for a in (ann, *args, *(getattr(x, "__args__", ()) for x in args))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return sorted(current.model_fields) if current else []


def load_file(path: Path | None) -> FileConfig:
    if path is None:
        return FileConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            str(path),
            "file not found",
            "create it, or point R2SF_CONFIG / --config at your r2sf.toml",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            str(path), f"not valid TOML ({exc})", "fix the syntax at that line"
        ) from None
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise explain_validation(path, exc, FileConfig) from None


def config_path(explicit: str | None, environ: dict[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("R2SF_CONFIG"):
        return Path(env["R2SF_CONFIG"])
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


def load_settings(
    explicit_config: str | None = None, environ: dict[str, str] | None = None
) -> Settings:
    env = dict(os.environ if environ is None else environ)
    path = config_path(explicit_config, env)
    file = load_file(path)
    raw_url = env.get("DATABASE_URL")
    if not raw_url:
        raise ConfigError(
            "DATABASE_URL",
            "not set",
            "export DATABASE_URL=postgresql://user:password@host:5432/dbname",
        )
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
    return Settings(
        config_path=path,
        file=file,
        database_url=normalise_database_url(raw_url),
        credentials=parse_credentials(env.get("ODATA_CREDENTIALS", "")),
        port=port,
        pool_url=(
            normalise_database_url(pool_raw, "DATABASE_CONNECTION_POOL_URL") if pool_raw else None
        ),
        follower_url=(normalise_database_url(follower_raw, follower_var) if follower_raw else None),
    )
