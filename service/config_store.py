"""The stored configuration and how it combines with r2sf.toml.

Precedence (also in README, Configuration): when the database holds a stored version, its
`[sync]` (all of it but `alert_webhook`) and the exposure keys of `[odata]` (`MANAGED_ODATA`)
replace the file's; everything else (paths, page sizes, `[server]`, `[source]`) and every secret
stays in the file (or `R2SF_CONFIG_TOML`) and config vars. With nothing stored the file is used
as it is; the first save in the console starts from the file's values. Both paths go through
the same validation (`validate_file`, `load_jobs`), so they report the same messages.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import getpass
import json
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg

from service.config import (
    ConfigError,
    FileConfig,
    Settings,
    load_settings,
    parse_toml,
    validate_file,
)
from sync import stored_config
from sync.config import Job, load_jobs

log = logging.getLogger("r2sf.service")

MANAGED_ODATA = ("expose", "sets", "change_tracking", "change_retention")
# Kept in config vars, never in the database: a webhook URL carries its own secret.
SECRET_SYNC_KEYS = ("alert_webhook",)


def managed(file: FileConfig) -> dict[str, Any]:
    """The part of a file's configuration that the stored configuration holds."""
    odata = file.odata.model_dump(include=set(MANAGED_ODATA), exclude_none=True)
    odata["sets"] = [s.model_dump(exclude_none=True, exclude_defaults=True) | {"table": s.table}
                     for s in file.odata.sets]  # fmt: skip
    sync = file.sync.model_dump(
        exclude=set(SECRET_SYNC_KEYS), exclude_none=True, exclude_defaults=True
    )
    return {"odata": odata, "sync": sync}


def document_from(raw: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The managed part of a TOML document (a whole r2sf.toml is fine), and notes on what was
    left for the file. A secret is refused rather than dropped silently."""
    for key in SECRET_SYNC_KEYS:
        if key in raw.get("sync", {}):
            raise ConfigError(
                f"{where}: sync.{key}",
                "the stored configuration never holds a secret",
                "set it as the config var R2SF_ALERT_WEBHOOK and remove it from this file",
            )
    odata = {k: v for k, v in raw.get("odata", {}).items() if k in MANAGED_ODATA}
    left = [f"[{k}]" for k in raw if k not in ("odata", "sync")]
    left += [f"odata.{k}" for k in raw.get("odata", {}) if k not in MANAGED_ODATA]
    doc: dict[str, Any] = {"odata": odata, "sync": dict(raw.get("sync", {}))}
    return doc, left


def overlay(file: FileConfig, doc: dict[str, Any], where: str) -> FileConfig:
    """The file's configuration with the stored document's managed keys in place, validated
    exactly as r2sf.toml is."""
    raw = file.model_dump()
    raw["odata"].update({k: v for k, v in doc.get("odata", {}).items() if k in MANAGED_ODATA})
    secrets = {k: v for k, v in raw["sync"].items() if k in SECRET_SYNC_KEYS and v is not None}
    raw["sync"] = {**secrets, **doc.get("sync", {})}
    return validate_file(raw, where)


def validate(settings: Settings, doc: dict[str, Any], where: str) -> tuple[FileConfig, list[Job]]:
    merged = overlay(settings.file, doc, where)
    return merged, load_jobs(merged, where)


# -- TOML out ----------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _string(k)


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(doc: dict[str, Any]) -> str:
    """The document as TOML: one table per section, arrays of tables for sets and jobs."""
    out: list[str] = []
    for section, table in doc.items():
        out.append(f"[{_key(section)}]")
        out += [f"{_key(k)} = {_value(v)}" for k, v in table.items() if not _is_tables(v)]
        for k, v in table.items():
            if _is_tables(v):
                for item in v:
                    out += ["", f"[[{_key(section)}.{_key(k)}]]"]
                    out += [f"{_key(ik)} = {_value(iv)}" for ik, iv in item.items()]
        out.append("")
    return "\n".join(out)


# -- saving ------------------------------------------------------------------------------------


async def current(conn: Any, settings: Settings) -> tuple[int, dict[str, Any]]:
    """(version id, document) of what runs now: the newest stored version, else the file's."""
    version = await stored_config.latest(conn)
    if version is None:
        return 0, managed(settings.file)
    return version.id, version.data


async def effective(conn: Any, settings: Settings) -> tuple[Settings, int]:
    """The settings with the stored configuration applied, and its version (0: none)."""
    version = await stored_config.latest(conn)
    if version is None:
        return settings, 0
    merged = overlay(settings.file, version.data, f"stored configuration (version {version.id})")
    return replace(settings, file=merged), version.id


def with_stored(settings: Settings) -> tuple[Settings, str]:
    """For commands (`check`, `status`): the settings with the stored configuration applied,
    and where the configuration came from. An unreachable database leaves them as they are (the
    command reports the connection itself); an invalid stored version raises ConfigError."""

    async def go() -> tuple[Settings, int]:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=10, statement_cache_size=0)
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return settings, 0
        try:
            return await effective(conn, settings)
        finally:
            await conn.close()

    applied, version = asyncio.run(go())
    where = f"stored configuration version {version} over {settings.config_where}"
    return applied, where if version else settings.config_where


async def save(
    conn: Any,
    settings: Settings,
    doc: dict[str, Any],
    *,
    who: str,
    action: str,
    based_on: int | None,
    where: str = "console",
) -> int:
    """Validate and store a new version; returns its id. Raises ConfigError (the same messages
    as r2sf.toml) or StaleVersion."""
    validate(settings, doc, where)
    text = to_toml(doc)
    before_id, before = await current(conn, settings)
    old = to_toml(before)
    label = f"version {before_id}" if before_id else settings.config_where
    diff = "".join(
        difflib.unified_diff(old.splitlines(True), text.splitlines(True), label, "this version")
    )
    return await stored_config.append(
        conn, text, saved_by=who, action=action, diff=diff, based_on=based_on
    )


async def rollback(
    conn: Any, settings: Settings, version_id: int, *, who: str, based_on: int | None
) -> int:
    version = await stored_config.get(conn, version_id)
    if version is None:
        raise ConfigError("history", f"there is no version {version_id}", "pick one from the list")
    return await save(conn, settings, version.data, who=who, based_on=based_on,
                      action=f"rolled back to version {version_id}")  # fmt: skip


# -- r2sf config export / import ---------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = commands.add_parser("config", help="the configuration stored in the database")
    sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    export = sub.add_parser("export", help="print the stored configuration as TOML")
    export.set_defaults(handler=export_command)
    imp = sub.add_parser("import", help="validate a TOML file and store it as the new version")
    imp.add_argument("file", metavar="FILE")
    imp.set_defaults(handler=import_command)


async def _connect(settings: Settings) -> Any:
    try:
        return await asyncpg.connect(settings.database_url, timeout=30, statement_cache_size=0)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigError("DATABASE_URL", f"cannot connect ({type(exc).__name__})",
                          "check the host, port, database name and credentials") from None  # fmt: skip


def export_command(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))

    async def run() -> tuple[int, dict[str, Any]]:
        conn = await _connect(settings)
        try:
            return await current(conn, settings)
        finally:
            await conn.close()

    version, doc = asyncio.run(run())
    head = (
        f"# r2sf stored configuration, version {version}\n"
        if version
        else f"# nothing stored yet: the managed part of {settings.config_where}\n"
    )
    sys.stdout.write(head + to_toml(doc))
    return 0


def import_command(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(path), f"cannot read it ({exc.strerror})", "give a TOML file"
        ) from None
    doc, left = document_from(parse_toml(text, str(path)), str(path))

    async def run() -> int:
        conn = await _connect(settings)
        try:
            who = f"r2sf config import ({getpass.getuser()})"
            return await save(conn, settings, doc, who=who, action=f"imported {path.name}",
                              based_on=None, where=str(path))  # fmt: skip
        finally:
            await conn.close()

    version = asyncio.run(run())
    if left:
        print(f"r2sf config import: not stored (they stay in the file and config vars): "
              f"{', '.join(left)}", file=sys.stderr)  # fmt: skip
    print(f"r2sf config import: stored {path} as version {version}")
    return 0
