"""Change tracking: the change log, delta tokens and what a delta contains (Protocol §11.3).

Statement-level triggers with transition tables append the key of every row a statement
inserted, updated or deleted to `r2sf.changes`, with the id of the writing transaction
(`pg_current_xact_id()`); a TRUNCATE leaves a marker. So the log is exact whoever writes the
table, and set-based: one INSERT per statement, not per row.

A delta token carries the `pg_snapshot` under which its answer was read. The changes since are
the log rows whose transaction that snapshot did not see (`NOT pg_visible_in_snapshot`) and the
reading transaction does: a transaction still running when the token was issued is reported by
the first delta read after it commits, whatever the commit order, and a rolled-back one never
(its log rows vanish with it). A plain sequence compared with `>` would miss the late committer.

Tokens are signed (HMAC-SHA256 with a key kept in `r2sf.secrets`, the same for every worker and
dyno) and bound to the entity set and to a fingerprint of its key and columns. This module
never builds a response; `odata.sql.delta` builds the query, `odata.response.delta` the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from odata.errors import BadRequest, Gone
from odata.ident import ident, qualified
from odata.model import EntitySet

log = logging.getLogger("r2sf.odata.changes")

LOCK_CLASS = 0x72327366 & 0x7FFFFFFF  # "r2sf", shared with odata/versions.py and sync/schema.py
INSTALL_LOCK = 2

_TRIGGERS = {
    "r2sf_ct_ins": "AFTER INSERT ON {rel} REFERENCING NEW TABLE AS r2sf_new FOR EACH STATEMENT",
    "r2sf_ct_upd": (
        "AFTER UPDATE ON {rel} REFERENCING OLD TABLE AS r2sf_old NEW TABLE AS r2sf_new"
        " FOR EACH STATEMENT"
    ),
    "r2sf_ct_del": "AFTER DELETE ON {rel} REFERENCING OLD TABLE AS r2sf_old FOR EACH STATEMENT",
    "r2sf_ct_trunc": "AFTER TRUNCATE ON {rel} FOR EACH STATEMENT",
}


TRIGGER_NAMES = tuple(_TRIGGERS)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def key_columns(entity_set: EntitySet) -> tuple[str, ...]:
    et = entity_set.entity_type
    return tuple(p.column for p in et.key_properties)


def fingerprint(entity_set: EntitySet) -> str:
    """What a delta token is bound to: the set's key and its columns with their types."""
    et = entity_set.entity_type
    parts = [entity_set.schema, entity_set.table, ",".join(key_columns(entity_set))]
    parts += [f"{p.name}:{p.column}:{p.edm_type}" for p in et.properties]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


async def install(conn: asyncpg.Connection, entity_set: EntitySet, oid: int) -> None:
    """Create the set's triggers when missing (or when its key changed).

    The log, the key table and `r2sf.log_changes()` are migration 4 of sync/schema.py.
    """
    rel = qualified(entity_set.schema, entity_set.table)
    args = ", ".join(_literal(ident(c)) for c in key_columns(entity_set))
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, INSTALL_LOCK)
        existing = {
            r["tgname"]: r["args"]
            for r in await conn.fetch(
                "SELECT tgname::text, encode(tgargs, 'escape') AS args FROM pg_trigger"
                " WHERE tgrelid = $1 AND tgname LIKE 'r2sf\\_ct\\_%'",
                oid,
            )
        }
        for name, spec in _TRIGGERS.items():
            wanted = args if name != "r2sf_ct_trunc" else ""
            if name in existing and _args_match(existing[name], wanted):
                continue
            if name in existing:
                await conn.execute(f"DROP TRIGGER {name} ON {rel}")
            await conn.execute(
                f"CREATE TRIGGER {name} {spec.format(rel=rel)}"
                f" EXECUTE FUNCTION r2sf.log_changes({wanted})"
            )
            log.info("%s: change-tracking trigger %s installed", rel, name)


def _args_match(stored: str, wanted: str) -> bool:
    # pg_trigger.tgargs holds each argument followed by a NUL byte (shown as \000).
    got = [a for a in stored.split("\\000") if a]
    want = [a.strip()[1:-1].replace("''", "'") for a in wanted.split(", ") if a.strip()]
    return got == want


async def signing_key(conn: asyncpg.Connection) -> bytes:
    """The service's token key: made once, shared by every process through the database."""
    await conn.execute(
        "INSERT INTO r2sf.secrets (name, value) VALUES ('delta_token', $1) ON CONFLICT DO NOTHING",
        secrets.token_bytes(32),
    )
    value: bytes = await conn.fetchval("SELECT value FROM r2sf.secrets WHERE name = 'delta_token'")
    return value


@dataclass(frozen=True)
class DeltaToken:
    """Where a delta starts (`since`), and for a page inside a delta where it ends and resumes."""

    entity_set: str
    model: str  # fingerprint(entity_set) when issued
    since: str  # pg_snapshot text: changes this snapshot did not see are reported
    issued: int  # unix seconds
    until: str | None = None  # inside a paged delta: the snapshot the delta was read under
    after: str | None = None  # inside a paged delta: the last key (JSON) already sent

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"s": self.entity_set, "m": self.model, "x": self.since}
        out["t"] = self.issued
        if self.until is not None:
            out["u"] = self.until
            out["a"] = self.after
        return out


class Tokens:
    """Signs and checks delta tokens."""

    def __init__(self, key: bytes, retention_seconds: int) -> None:
        self.key = key
        self.retention = retention_seconds

    def encode(self, token: DeltaToken) -> str:
        data = json.dumps(token.payload(), separators=(",", ":")).encode()
        mac = hmac.new(self.key, data, hashlib.sha256).digest()[:16]
        return _b64(data) + "." + _b64(mac)

    def decode(self, text: str, entity_set: EntitySet, now: float | None = None) -> DeltaToken:
        """The token, checked; 400 when it was altered, 410 when it can no longer be served."""
        try:
            data_part, mac_part = text.split(".")
            data = _unb64(data_part)
            mac = _unb64(mac_part)
        except ValueError:
            raise BadRequest(_TAMPERED, target="$deltatoken") from None
        good = hmac.new(self.key, data, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, good):
            raise BadRequest(_TAMPERED, target="$deltatoken")
        raw = json.loads(data)
        token = DeltaToken(
            entity_set=raw["s"],
            model=raw["m"],
            since=raw["x"],
            issued=raw["t"],
            until=raw.get("u"),
            after=raw.get("a"),
        )
        if token.entity_set != entity_set.name:
            raise BadRequest(
                f"this delta link belongs to entity set '{token.entity_set}', not"
                f" '{entity_set.name}'; use the delta link as it was given",
                target="$deltatoken",
            )
        if token.model != fingerprint(entity_set):
            raise Gone(
                f"the key or the columns of {entity_set.name} changed since this delta link was"
                " issued, so its changes cannot be described; start tracking again (in"
                " Salesforce: turn Track Data Changes off and on for the external object)"
            )
        age = (time.time() if now is None else now) - token.issued
        if age > self.retention:
            raise Gone(
                f"this delta link is {age / 86400:.1f} days old, older than the change log"
                f" keeps changes ({self.retention / 86400:g} days, [odata] change_retention);"
                " start tracking again (in Salesforce: turn Track Data Changes off and on for"
                " the external object), or raise change_retention"
            )
        return token


_TAMPERED = "the delta link was altered or is not one this service issued; use it as given"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("not base64") from None


TRUNCATED_SQL = """
SELECT EXISTS (
    SELECT 1 FROM r2sf.changes
    WHERE relid = $1 AND key IS NULL AND xid >= pg_snapshot_xmin($2::text::pg_snapshot)
      AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)
)
"""


async def check_not_truncated(conn: asyncpg.Connection, oid: int, since: str, name: str) -> None:
    if await conn.fetchval(TRUNCATED_SQL, oid, since):
        raise Gone(
            f"{name} was emptied with TRUNCATE since this delta link was issued, which removes"
            " rows without naming them; start tracking again (in Salesforce: turn Track Data"
            " Changes off and on for the external object)"
        )


async def prune(conn: asyncpg.Connection, retention_seconds: int, batch: int = 10_000) -> int:
    """Delete log rows older than the retention, in short batches (no long lock)."""
    removed = 0
    while True:
        status = await conn.execute(
            "DELETE FROM r2sf.changes WHERE ctid = ANY (ARRAY(SELECT ctid FROM r2sf.changes"
            " WHERE changed_at < now() - make_interval(secs => $1) LIMIT $2))",
            float(retention_seconds),
            batch,
        )
        n = int(status.split()[-1])
        removed += n
        if n < batch:
            return removed


async def log_size(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows in the change log per relation (schema.table)."""
    if await conn.fetchval("SELECT to_regclass('r2sf.changes') IS NULL"):
        return {}
    rows = await conn.fetch(
        "SELECT n.nspname || '.' || c.relname AS rel, l.n FROM (SELECT relid, count(*) AS n"
        " FROM r2sf.changes GROUP BY relid) l JOIN pg_class c ON c.oid = l.relid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
    )
    return {r["rel"]: r["n"] for r in rows}


def parse_retention(text: str) -> int:
    """`7d`, `36h`, `90m` or seconds -> seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip().lower()
    if t and t[-1] in units and t[:-1].strip().isdigit():
        return int(t[:-1]) * units[t[-1]]
    if t.isdigit():
        return int(t)
    raise ValueError(f'\'{text}\' is not a duration: write e.g. "7d", "36h" or "90m"')
