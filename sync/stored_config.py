"""The configuration kept in the target database: every saved version, newest wins.

A version is a TOML document holding `[sync]` and the exposure keys of `[odata]` (what the
console edits); it is stored whole, with who saved it, why and the diff from the version before.
This module only stores and reads documents: validating them is the caller's job (the same
validation as r2sf.toml), and it never stores anything but what it is given.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sync import schema


class StaleVersion(Exception):
    """Someone saved another version after the one this change was based on."""

    def __init__(self, expected: int, latest: int) -> None:
        super().__init__(
            f"version {latest} was saved after version {expected}, which this change started"
            " from: reload the page and make the change again"
        )
        self.expected = expected
        self.latest = latest


@dataclass(frozen=True)
class Version:
    id: int
    saved_at: datetime
    saved_by: str
    action: str
    document: str
    diff: str

    @property
    def data(self) -> dict[str, Any]:
        return tomllib.loads(self.document)


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    who: str
    action: str
    subject: str
    state: str
    detail: dict[str, Any]


async def _exists(conn: Any) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('r2sf.config_versions') IS NOT NULL"))


async def latest_id(conn: Any) -> int:
    """The newest version's id; 0 when nothing was ever stored (or the schema is older)."""
    if not await _exists(conn):
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM r2sf.config_versions"))


async def latest(conn: Any) -> Version | None:
    if not await _exists(conn):
        return None
    row = await conn.fetchrow("SELECT * FROM r2sf.config_versions ORDER BY id DESC LIMIT 1")
    return Version(**dict(row)) if row else None


async def get(conn: Any, version_id: int) -> Version | None:
    if not await _exists(conn):
        return None
    row = await conn.fetchrow("SELECT * FROM r2sf.config_versions WHERE id = $1", version_id)
    return Version(**dict(row)) if row else None


async def versions(conn: Any, limit: int = 50) -> list[Version]:
    if not await _exists(conn):
        return []
    rows = await conn.fetch("SELECT * FROM r2sf.config_versions ORDER BY id DESC LIMIT $1", limit)
    return [Version(**dict(r)) for r in rows]


async def append(
    conn: Any, document: str, *, saved_by: str, action: str, diff: str, based_on: int | None
) -> int:
    """Store a new version; `based_on` (the version the change started from) guards against
    overwriting a version saved meanwhile. Returns the new version's id."""
    await schema.migrate(conn)
    async with conn.transaction():
        await conn.execute("LOCK TABLE r2sf.config_versions IN EXCLUSIVE MODE")
        current = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM r2sf.config_versions"))
        if based_on is not None and based_on != current:
            raise StaleVersion(based_on, current)
        new_id: int = await conn.fetchval(
            "INSERT INTO r2sf.config_versions (saved_by, action, document, diff)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            saved_by,
            action,
            document,
            diff,
        )
        return new_id


async def stored_sync_section(conn: Any) -> tuple[int, dict[str, Any] | None]:
    """(version id, the stored `[sync]` table) — (0, None) when nothing is stored."""
    version = await latest(conn)
    if version is None:
        return 0, None
    sync: dict[str, Any] = version.data.get("sync", {})
    return version.id, sync


async def record(
    conn: Any,
    who: str,
    action: str,
    subject: str = "",
    *,
    state_: str = "done",
    detail: dict[str, Any] | None = None,
) -> int:
    """Add an entry to the audit history (a run, a dry run) and return its id."""
    await schema.migrate(conn)
    event_id: int = await conn.fetchval(
        "INSERT INTO r2sf.admin_audit (who, action, subject, state, detail)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
        who,
        action,
        subject,
        state_,
        json.dumps(detail or {}, default=str),
    )
    return event_id


async def finish(conn: Any, event_id: int, state_: str, detail: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE r2sf.admin_audit SET state = $2, detail = $3::jsonb WHERE id = $1",
        event_id,
        state_,
        json.dumps(detail, default=str),
    )


async def events(conn: Any, limit: int = 50, subject: str | None = None) -> list[Event]:
    if not bool(await conn.fetchval("SELECT to_regclass('r2sf.admin_audit') IS NOT NULL")):
        return []
    rows = await conn.fetch(
        "SELECT * FROM r2sf.admin_audit WHERE $2::text IS NULL OR subject = $2"
        " ORDER BY id DESC LIMIT $1",
        limit,
        subject,
    )
    out = []
    for r in rows:
        detail = r["detail"]
        out.append(Event(**{**dict(r), "detail": json.loads(detail) if isinstance(detail, str)
                            else detail}))  # fmt: skip
    return out
