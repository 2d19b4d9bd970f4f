"""The r2sf schema: one ordered list of migrations (sync/schema.py) brings any database, fresh or
left by an earlier release, to the same objects, and a role that may not create schemas can
still start against a database its owner migrated."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from sync.schema import LATEST, MIGRATIONS, migrate, schema_version
from tests.conftest import run

# Every object some part of r2sf uses, whoever uses it (sync, odata/versions.py, odata/changes.py).
OBJECTS = ("r2sf.sync_runs", "r2sf.watermarks", "r2sf.hc_owned", "r2sf.hc_adopt_pending",
           "r2sf.data_versions", "r2sf.data_version_seq", "r2sf.changes", "r2sf.secrets")  # fmt: skip
FUNCTIONS = ("r2sf.bump_data_version()", "r2sf.log_changes()")


async def connect(url: str) -> Any:
    return await asyncpg.connect(url)


async def missing(conn: Any) -> list[str]:
    gone = [o for o in OBJECTS if await conn.fetchval("select to_regclass($1)", o) is None]
    for f in FUNCTIONS:
        if await conn.fetchval("select to_regprocedure($1)", f) is None:
            gone.append(f)
    return gone


def test_migrate_creates_every_object_in_order_once(fresh_db: str) -> None:
    async def check() -> None:
        conn = await connect(fresh_db)
        try:
            assert await schema_version(conn) == 0
            assert await migrate(conn) == LATEST == len(MIGRATIONS)
            assert await missing(conn) == []
            assert await migrate(conn) == LATEST  # the second time: nothing to do
            versions = await conn.fetch("select version from r2sf.schema_version order by 1")
            assert [r["version"] for r in versions] == list(range(1, LATEST + 1))
        finally:
            await conn.close()

    run(check())


def test_a_database_the_previous_release_started_on_keeps_its_data(fresh_db: str) -> None:
    # Before one list owned the schema, migrations stopped at 2 and the service created the
    # data versions and the change log at start-up: those objects exist, with rows in them.
    async def check() -> None:
        conn = await connect(fresh_db)
        try:
            await conn.execute("create schema r2sf; create table r2sf.schema_version"
                               " (version int not null, applied_at timestamptz not null"
                               " default now())")  # fmt: skip
            for version, sql in enumerate(MIGRATIONS, start=1):
                await conn.execute(sql)  # 3 and 4 as the old start-up DDL left them
                if version <= 2:
                    await conn.execute("insert into r2sf.schema_version values ($1)", version)
            await conn.execute("insert into r2sf.data_versions values (1234, 7)")
            await conn.execute("insert into r2sf.secrets values ('delta_token', 'k')")
            assert await schema_version(conn) == 2
            assert await migrate(conn) == LATEST
            assert await conn.fetchval("select version from r2sf.data_versions") == 7
            assert await conn.fetchval("select value from r2sf.secrets") == b"k"
            assert await missing(conn) == []
        finally:
            await conn.close()

    run(check())


@pytest.fixture
def unprivileged(fresh_db: str) -> Any:
    """A login role that may connect and read r2sf, but not create a schema."""
    role = "r2sf_noddl_" + fresh_db.rsplit("/", 1)[1].split("?")[0][-8:]

    async def admin(sql: str) -> None:
        conn = await connect(fresh_db)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run(admin(f"drop role if exists {role}; create role {role} login"))
    scheme, _, rest = fresh_db.partition("://")
    url = f"{scheme}://{role}@{rest.rpartition('@')[2]}"
    yield url, admin, role
    run(admin(f"drop owned by {role}; drop role {role}"))


def test_a_role_without_create_privilege_starts_on_a_migrated_schema(
    fresh_db: str, unprivileged: Any
) -> None:
    url, _admin, role = unprivileged

    async def check() -> None:
        conn = await connect(url)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await migrate(conn)  # nothing there yet, and it may not create it
            owner = await connect(fresh_db)
            try:
                await migrate(owner)  # `r2sf migrate`, the release phase, as the owner
                await owner.execute(f"grant usage on schema r2sf to {role};"
                                    f" grant select on all tables in schema r2sf to {role}")  # fmt: skip
            finally:
                await owner.close()
            assert await migrate(conn) == LATEST  # up to date: no DDL, no error
        finally:
            await conn.close()

    run(check())
