"""Discover: turn a warehouse schema into ready-to-edit `[[sync.jobs]]` TOML (the crawler's job).

Reads only `information_schema` (which Redshift and PostgreSQL both have), and with
`--heroku-connect` the target's `salesforce.*` tables, matching columns by lowercase name or
`name__c`. It prints text and never writes to either database.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sync.config import HEROKU_CONNECT_SYSTEM_COLUMNS
from sync.errors import SourceError
from sync.settings import redact_url
from sync.source import is_redshift, redshift_connect_args

_COLUMNS_SQL = """
SELECT c.table_name, c.column_name, c.data_type, c.character_maximum_length,
       c.numeric_precision, c.numeric_scale
FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = {p} AND t.table_type IN ('BASE TABLE', 'VIEW')
ORDER BY c.table_name, c.ordinal_position
"""

_KEYS_SQL = """
SELECT tc.table_name, tc.constraint_type, tc.constraint_name, k.column_name
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage k
  ON k.constraint_schema = tc.constraint_schema AND k.constraint_name = tc.constraint_name
 AND k.table_name = tc.table_name
WHERE tc.table_schema = {p} AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')
ORDER BY tc.table_name, tc.constraint_type, tc.constraint_name, k.ordinal_position
"""

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Table:
    name: str
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type as text)
    key: list[str] = field(default_factory=list)
    key_guessed: bool = False


async def fetch_all(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one read-only query on a postgresql:// or redshift:// source ({p} = parameter 1)."""
    if is_redshift(url):
        return await asyncio.to_thread(_redshift_fetch_all, url, sql.format(p="%s"), args)
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        return [tuple(r) for r in await conn.fetch(sql.format(p="$1"), *args)]
    finally:
        await conn.close()


def _redshift_fetch_all(url: str, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    from sync.redshift import connect

    conn = connect(**redshift_connect_args(url))
    try:
        cur = conn.cursor()
        cur.execute(sql, tuple(args))
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


async def preview(url: str, sql: str, limit: int = 5) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, the first `limit` rows) of a job's source statement, read-only."""
    wrapped = f"SELECT * FROM ({sql}) AS r2sf_preview LIMIT {int(limit)}"
    try:
        if is_redshift(url):
            return await asyncio.to_thread(_redshift_preview, url, wrapped)
        conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1), timeout=30)
        try:
            async with conn.transaction(readonly=True):
                stmt = await conn.prepare(wrapped)
                names = [a.name for a in stmt.get_attributes()]
                return names, [tuple(r) for r in await stmt.fetch()]
        finally:
            await conn.close()
    except Exception as exc:
        text = str(exc).replace(url, redact_url(url)).splitlines()[0:1]
        raise SourceError("preview", f"the warehouse refused the query: {''.join(text)}") from None


def _redshift_preview(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    from sync.redshift import connect

    conn = connect(**redshift_connect_args(url))
    try:
        cur = conn.cursor()
        cur.execute(sql)
        names = [d[0] for d in cur.description or []]
        return names, [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _type_text(data_type: str, length: Any, precision: Any, scale: Any) -> str:
    if length is not None and data_type in ("character varying", "character"):
        return f"{data_type}({length})"
    if data_type == "numeric" and precision is not None:
        return f"numeric({precision},{scale or 0})"
    return data_type


async def read_tables(url: str, schema: str, only: Sequence[str]) -> list[Table]:
    try:
        cols = await fetch_all(url, _COLUMNS_SQL, schema)
        keys = await fetch_all(url, _KEYS_SQL, schema)
    except Exception as exc:
        text = str(exc).replace(url, redact_url(url)).splitlines()[0:1]
        raise SourceError("discover", f"cannot read {redact_url(url)}: {''.join(text)}") from None
    tables: dict[str, Table] = {}
    for tname, cname, dtype, length, precision, scale in cols:
        if only and tname not in only:
            continue
        t = tables.setdefault(tname, Table(tname))
        t.columns.append((cname, _type_text(dtype, length, precision, scale)))
    chosen: dict[str, tuple[str, str]] = {}
    for tname, ctype, cname_, col in keys:
        if tname not in tables:
            continue
        # Prefer the primary key, else the first unique constraint.
        if tname not in chosen:
            chosen[tname] = (ctype, cname_)
        if chosen[tname] == (ctype, cname_):
            tables[tname].key.append(col)
    for t in tables.values():
        if not t.key:
            guess = next((c for c, _ in t.columns if c.lower().endswith("id")), t.columns[0][0])
            t.key, t.key_guessed = [guess], True
    missing = [n for n in only if n not in tables]
    if missing:
        raise SourceError("discover", f"no table or view {', '.join(missing)} in schema '{schema}'")
    return [tables[n] for n in sorted(tables)]


async def salesforce_tables(target_url: str) -> dict[str, dict[str, str]]:
    """Mapped table -> {column: data type} in the target's `salesforce` schema."""
    rows = await fetch_all(
        target_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = {p} ORDER BY table_name, ordinal_position",
        "salesforce",
    )
    out: dict[str, dict[str, str]] = {}
    for t, c, ty in rows:
        out.setdefault(t, {})[c] = ty
    return out


_NUMERIC_SCALE = re.compile(r"(?:numeric|decimal)\(\s*\d+\s*,\s*(\d+)\s*\)", re.I)


def _s(v: str) -> str:
    return json.dumps(v)  # a JSON string is a valid TOML basic string


def _k(v: str) -> str:
    return v if _BARE_KEY.fullmatch(v) else _s(v)


def job_toml(schema: str, t: Table, sf: dict[str, dict[str, str]] | None) -> str:
    lines = ["[[sync.jobs]]", f"name = {_s(t.name)}"]
    types = ", ".join(f"{c} {ty}" for c, ty in t.columns)
    target = f"public.{t.name}"
    extra: list[str] = []
    source_line = f"table = {_s(f'{schema}.{t.name}')}"
    if sf is not None:
        match = next((n for n in (t.name.lower() + "__c", t.name.lower()) if n in sf), None)
        if match is None:
            extra.append(f"# no salesforce.{t.name.lower()}__c table found; a plain target:")
        else:
            target = f"salesforce.{match}"
            have = {c.lower(): c for c in sf[match] if c not in HEROKU_CONNECT_SYSTEM_COLUMNS}
            mapping: dict[str, str] = {}
            unmatched: list[str] = []
            for c, _ in t.columns:
                dst = have.get(c.lower() + "__c") or have.get(c.lower())
                if dst is None:
                    unmatched.append(c)
                else:
                    mapping[c] = dst
            if unmatched:
                cols = ", ".join(c for c in mapping)
                source_line = f"query = {_s(f'select {cols} from {schema}.{t.name}')}"
                extra.append(f"# not in {target}, left out: {', '.join(unmatched)}")
            key_dst = mapping.get(t.key[0], t.key[0].lower() + "__c")
            renames = {s: d for s, d in mapping.items() if s != d}
            # A decimal written to a double precision field: Salesforce keeps the field's
            # scale, which the mapped column's type does not record (docs/operators.md §7).
            source_types = dict(t.columns)
            scales = {
                d: m.group(1)
                for s, d in mapping.items()
                if sf[match].get(d) == "double precision"
                and (m := _NUMERIC_SCALE.fullmatch(source_types[s].strip()))
            }
            hc, note = f"external_id = {_s(key_dst)}", ""
            if scales:
                hc += ", scale = { " + ", ".join(f"{_k(d)} = {n}" for d, n in scales.items()) + " }"
                note = "  # scale: check the fields' decimal places in Salesforce"
            extra.append(f"heroku_connect = {{ {hc} }}{note}")
            if renames:
                inner = ", ".join(f"{_k(s)} = {_s(d)}" for s, d in renames.items())
                extra.append(f"columns = {{ {inner} }}")
            t = Table(t.name, t.columns, t.key[:1], t.key_guessed)
    lines.append(source_line)
    lines.append(f"target = {_s(target)}")
    key = ", ".join(_s(k) for k in t.key)
    lines.append(
        f"key = [{key}]" + ("  # guessed: no primary key; check it" if t.key_guessed else "")
    )
    lines += [
        'schedule = "0 * * * *"',
        'deletes = "ignore"',
        'max_deletes = "10%"',
        f"# source columns: {types}",
        '# incremental = { column = "updated_at" }',
        *extra,
    ]
    return "\n".join(lines) + "\n"


async def discover(
    url: str, schema: str, tables: Sequence[str], target_url: str | None = None
) -> str:
    found = await read_tables(url, schema, tables)
    sf = await salesforce_tables(target_url) if target_url else None
    head = f"# r2sf discover: {len(found)} table(s) in {redact_url(url)} schema {schema}\n"
    return head + "\n".join("\n" + job_toml(schema, t, sf) for t in found)
