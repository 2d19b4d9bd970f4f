import asyncpg

from tests.conftest import run


def test_fresh_database_is_empty_and_writable(fresh_db: str) -> None:
    async def go() -> int:
        conn = await asyncpg.connect(fresh_db)
        try:
            await conn.execute("create table t (id int primary key)")
            await conn.execute("insert into t values (1), (2)")
            return int(await conn.fetchval("select count(*) from t"))
        finally:
            await conn.close()

    assert run(go()) == 2
