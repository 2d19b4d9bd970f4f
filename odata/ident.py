"""The one function that quotes SQL identifiers, for the whole project (odata/ and sync/).

PostgreSQL quoting: wrap in double quotes and double any double quote inside, so any name is
safe, keeps its case and is never read as a keyword. Values are never quoted: they are always
bound parameters. The module imports nothing, so the sync can use it without the OData layer.
"""

from __future__ import annotations


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier: ident('a"b') == '"a""b"'."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    """`schema.name`, both parts quoted."""
    return f"{ident(schema)}.{ident(name)}"
