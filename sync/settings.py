"""Settings plumbing every r2sf process shares: the file, the target URL and `ConfigError`.

sync/ and service/ both read `r2sf.toml` and `DATABASE_URL`; this module holds the pieces they
share so that the library never imports the app (service/config.py re-exports them). It parses
nothing a command does not ask for, and it never prints a secret: `redact_url` is the one place
URL passwords are masked.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from sync.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "config_path",
    "database_url",
    "explain_validation",
    "normalise_database_url",
    "parse_toml",
    "read_config",
    "read_toml",
    "redact_url",
]

DEFAULT_CONFIG = "r2sf.toml"


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """--config, else $R2SF_CONFIG, else ./r2sf.toml when it exists (None: all defaults)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("R2SF_CONFIG"):
        return Path(env["R2SF_CONFIG"])
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


def read_toml(path: Path | None) -> dict[str, Any]:
    """The file's raw tables ({} without a file); validation is each section owner's job."""
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
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


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """TOML text's raw tables; `where` names it in the error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, f"not valid TOML ({exc})", "fix the syntax at that line") from None


def read_config(
    explicit: str | None, environ: Mapping[str, str] | None = None
) -> tuple[Path | None, str, dict[str, Any]]:
    """(path, its name for messages, raw tables): --config, else $R2SF_CONFIG, else the whole
    TOML in $R2SF_CONFIG_TOML (a deploy-button app has no repository), else ./r2sf.toml."""
    env = os.environ if environ is None else environ
    if not explicit and not env.get("R2SF_CONFIG") and env.get("R2SF_CONFIG_TOML"):
        return None, "R2SF_CONFIG_TOML", parse_toml(env["R2SF_CONFIG_TOML"], "R2SF_CONFIG_TOML")
    path = config_path(explicit, env)
    return path, str(path or DEFAULT_CONFIG), read_toml(path)


def database_url(environ: Mapping[str, str]) -> str:
    """$DATABASE_URL (the target Postgres), normalised; a ConfigError when it is missing."""
    raw_url = environ.get("DATABASE_URL")
    if not raw_url:
        raise ConfigError(
            "DATABASE_URL",
            "not set",
            "export DATABASE_URL=postgresql://user:password@host:5432/dbname",
        )
    return normalise_database_url(raw_url)


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
    more precise fix than the generic one (`section.field` keys win over bare field names).
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
    section = str((*prefix, *loc)[0]) if (prefix or loc) else ""
    known_fixes = fixes or {}
    fix = known_fixes.get(
        f"{section}.{field}",
        known_fixes.get(field, "correct the value (see README, Configuration)"),
    )
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
