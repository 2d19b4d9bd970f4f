"""Data versions: a number per exposed table that changes with every committed change.

Statement-level triggers (installed where r2sf may) bump `r2sf.data_versions` in the writer's own
transaction and NOTIFY the new version, so the sync, the service's writes, Heroku Connect and a
manual UPDATE are all seen. Each process LISTENs on one connection and keeps the versions in
memory: reading a version costs no round trip. A set without a trustworthy version (no trigger,
a materialized view, a lost LISTEN connection) has version None and is served uncached.
The table, sequence and trigger function are migration 3 of sync/schema.py; this module only
installs the per-table triggers, and without the schema every set is served uncached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg

from odata.ident import qualified
from odata.model import EntitySet

log = logging.getLogger("r2sf.odata.versions")

CHANNEL = "r2sf_data_version"  # r2sf.bump_data_version() (sync/schema.py) notifies on it
LOCK_CLASS = 0x72327366 & 0x7FFFFFFF  # shared with sync/schema.py: "r2sf"
INSTALL_LOCK = 1

_TRIGGERS = {
    "r2sf_dv_ins": "AFTER INSERT ON {rel} REFERENCING NEW TABLE AS r2sf_changed",
    "r2sf_dv_upd": "AFTER UPDATE ON {rel} REFERENCING NEW TABLE AS r2sf_changed",
    "r2sf_dv_del": "AFTER DELETE ON {rel} REFERENCING OLD TABLE AS r2sf_changed",
    "r2sf_dv_trunc": "AFTER TRUNCATE ON {rel}",
}

# Relations with the r2sf change triggers they already carry; two ways to name them.
_RELATIONS = """
select c.oid, n.nspname as schema, c.relname as table, c.relkind::text as kind,
       array(select t.tgname::text from pg_trigger t
             where t.tgrelid = c.oid and t.tgname like 'r2sf\\_dv\\_%') as triggers
from pg_class c join pg_namespace n on n.oid = c.relnamespace
"""
_RELATIONS_SQL = (
    _RELATIONS + "where (n.nspname, c.relname) in (select * from unnest($1::text[], $2::text[]))"
)
_RELATIONS_SQL_BY_OID = _RELATIONS + "where c.oid = any($1::oid[])"

# The base tables a view reads, through nested views.
_VIEW_BASES_SQL = """
with recursive deps(view_oid, ref) as (
    select r.ev_class, d.refobjid
    from pg_rewrite r
    join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid
                     and d.refclassid = 'pg_class'::regclass and d.refobjid <> r.ev_class
    where r.ev_class = any($1::oid[])
  union
    select deps.view_oid, d.refobjid
    from deps
    join pg_rewrite r on r.ev_class = deps.ref
    join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid
                     and d.refclassid = 'pg_class'::regclass and d.refobjid <> r.ev_class
)
select deps.view_oid, array_agg(distinct deps.ref) as bases,
       bool_or(c.relkind not in ('r', 'p', 'v')) as untrackable
from deps join pg_class c on c.oid = deps.ref
group by deps.view_oid
"""


class VersionTracker:
    """Per-process view of the data versions, kept current by LISTEN/NOTIFY."""

    def __init__(self, url: str, *, install: bool = True) -> None:
        self.url = url
        self.install = install
        self.versions: dict[int, int] = {}
        self.depends: dict[str, tuple[int, ...]] = {}  # entity set -> base table oids
        self.listening = False
        self.changes = 0  # counts every version change seen, for any table
        self._conn: asyncpg.Connection | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    def version(self, entity_set: str) -> int | None:
        """The set's current version, or None when it cannot be trusted (serve uncached)."""
        if not self.listening:
            return None
        deps = self.depends.get(entity_set)
        if not deps:
            return None
        if len(deps) == 1:  # a table: the common case, on every request
            return self.versions.get(deps[0], 0)
        # A view: each base table's version only grows, so their sum grows whenever any base
        # changes, whatever order concurrent writers of different tables commit in (the
        # largest alone would miss a write committed after a larger version of another table).
        return sum(self.versions.get(oid, 0) for oid in deps)

    def known(self, entity_set: str) -> dict[int, int] | None:
        """The version of each table the set reads, as this process knows them; None when the
        set has no trustworthy version."""
        if not self.listening:
            return None
        deps = self.depends.get(entity_set)
        if not deps:
            return None
        return {oid: self.versions.get(oid, 0) for oid in deps}

    async def start(self, sets: Iterable[EntitySet]) -> None:
        """Install what is missing, learn each set's tables, and LISTEN (again on reload)."""
        if self._conn is not None and not self._conn.is_closed():
            self.depends = await self._prepare(self._conn, list(sets))
            return
        conn = await asyncpg.connect(self.url, server_settings={"application_name": "r2sf-listen"})
        try:
            self.depends = await self._prepare(conn, list(sets))
        except BaseException:
            await conn.close()
            raise
        await self._listen(conn)

    async def _prepare(
        self, conn: asyncpg.Connection, sets: list[EntitySet]
    ) -> dict[str, tuple[int, ...]]:
        if await conn.fetchval("select to_regclass('r2sf.data_versions')") is None:
            return {}
        rows = await conn.fetch(_RELATIONS_SQL, [s.schema for s in sets], [s.table for s in sets])
        by_name = {(r["schema"], r["table"]): r for r in rows}
        tracked: set[int] = set()
        for row in rows:
            if row["kind"] in ("r", "p") and await self._ensure_triggers(conn, row):
                tracked.add(row["oid"])
        views = [r["oid"] for r in rows if r["kind"] == "v"]
        bases: dict[int, tuple[int, ...]] = {}
        for view in await conn.fetch(_VIEW_BASES_SQL, views) if views else []:
            if view["untrackable"]:
                continue  # reads a materialized view, foreign table or sequence
            tables = [
                b
                for b in await conn.fetch(_RELATIONS_SQL_BY_OID, view["bases"])
                if b["kind"] in ("r", "p")
            ]
            ok = bool(tables)
            for base in tables:
                if (
                    base["oid"] in tracked
                    or len(base["triggers"]) == len(_TRIGGERS)
                    or (self.install and await self._install_triggers(conn, base))
                ):
                    tracked.add(base["oid"])
                else:
                    ok = False
            if ok:
                bases[view["view_oid"]] = tuple(b["oid"] for b in tables)
        depends: dict[str, tuple[int, ...]] = {}
        for s in sets:
            row = by_name.get((s.schema, s.table))
            if row is None:
                continue
            if row["oid"] in tracked:
                depends[s.name] = (row["oid"],)
            elif row["oid"] in bases:
                depends[s.name] = bases[row["oid"]]
            else:
                log.info("entity set %s is served uncached: its changes cannot be tracked", s.name)
        return depends

    async def _ensure_triggers(self, conn: asyncpg.Connection, row: asyncpg.Record) -> bool:
        if len(row["triggers"]) == len(_TRIGGERS):
            return True
        return self.install and await self._install_triggers(conn, row)

    async def _install_triggers(self, conn: asyncpg.Connection, row: asyncpg.Record) -> bool:
        return await install_triggers(conn, row["schema"], row["table"], row["oid"])

    async def _listen(self, conn: asyncpg.Connection) -> None:
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(self._lost)
        # Read after LISTEN: a change committed in between is seen by one or the other.
        for r in (
            await conn.fetch("select relid, version from r2sf.data_versions")
            if self.depends
            else []
        ):
            self._bump(r["relid"], r["version"])
        self._conn = conn
        self.listening = True

    def learn(self, oid: int, version: int) -> None:
        """A version read from the primary (after this process wrote): as if notified."""
        self._bump(oid, version)

    def _bump(self, oid: int, version: int) -> None:
        if version > self.versions.get(oid, 0):
            self.versions[oid] = version
            self.changes += 1

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        oid, _, version = payload.partition(":")
        try:
            self._bump(int(oid), int(version))
        except ValueError:
            log.warning("ignoring malformed data-version notification")

    def _lost(self, _conn: object) -> None:
        self.listening = False  # uncached until we are listening again
        self.changes += 1
        if not self._closed:
            log.warning("lost the LISTEN connection; serving uncached until it is back")
            self._reconnect = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.5
        while not self._closed:
            try:
                conn = await asyncpg.connect(
                    self.url, server_settings={"application_name": "r2sf-listen"}
                )
                await self._listen(conn)
                log.info("LISTEN connection restored")
                return
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def close(self) -> None:
        self._closed = True
        self.listening = False
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._conn is not None:
            await self._conn.close()


async def install_triggers(conn: asyncpg.Connection, schema: str, table: str, oid: int) -> bool:
    """Install the data-version triggers a table lacks (the sync calls this for its targets
    too); False when r2sf may not (not the table's owner)."""
    rel = qualified(schema, table)
    try:
        async with conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1, $2)", LOCK_CLASS, INSTALL_LOCK)
            existing = {
                r["tgname"]: r["tgenabled"]
                for r in await conn.fetch(
                    "select tgname::text, tgenabled::text from pg_trigger where tgrelid = $1", oid
                )
            }
            for name, spec in _TRIGGERS.items():
                if name not in existing:
                    await conn.execute(
                        f"CREATE TRIGGER {name} {spec.format(rel=rel)} "
                        "FOR EACH STATEMENT EXECUTE FUNCTION r2sf.bump_data_version()"
                    )
                if existing.get(name, "O") == "O":
                    # Fired in replica mode too (logical replication, some restore tools):
                    # every write moves the version, whoever makes it. One an operator
                    # disabled (or enabled for replicas only) is left as it is.
                    await conn.execute(f"ALTER TABLE {rel} ENABLE ALWAYS TRIGGER {name}")
    except (
        asyncpg.InsufficientPrivilegeError,
        asyncpg.FeatureNotSupportedError,
        asyncpg.WrongObjectTypeError,
    ) as exc:
        log.warning(
            "%s: cannot install change triggers (%s); served uncached", rel, type(exc).__name__
        )
        return False
    log.info("%s: change triggers installed", rel)
    return True


async def triggers_installed(conn: asyncpg.Connection, oid: int) -> bool:
    """Whether every data-version trigger is on the table and fires for every write (enabled
    always: in replica mode as well; not disabled, nor enabled for replicas only)."""
    names = await conn.fetchval(
        "select array(select tgname::text from pg_trigger where tgrelid = $1"
        " and tgname like 'r2sf\\_dv\\_%' and tgenabled = 'A')",
        oid,
    )
    return set(names) >= set(_TRIGGERS)
