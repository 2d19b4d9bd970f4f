"""Entity ETags and the conditional headers that compare them (If-Match, If-None-Match).

An entity's ETag is a hash of its row computed by PostgreSQL in the very statement that reads or
writes the row: the same in every worker and dyno, and changed exactly when that row changes
(OData 4.01 Protocol §11.4.1.1), whatever happens to the rest of the table. This module builds
that SQL expression and parses and compares header values; it never runs a query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# `"*"` (any current entity) or the opaque tags a header lists.
Tags = Literal["*"] | tuple[str, ...]

# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, in a comma-separated list.
_TAG = re.compile(r'\s*(?:W/)?"([^"]*)"\s*(?:,|$)|\s*([^\s,]+)\s*(?:,|$)')


def row_hash(alias: str = "t") -> str:
    """SQL for the opaque part of the ETag of the row `alias`: md5 of the row's text form.

    The text form of a row is every column's output, so the hash covers columns the model
    leaves out too. It depends on session settings that format values (TimeZone, DateStyle,
    extra_float_digits), which every connection of the service's pool shares. `ROW(t.*)`, not
    `t`: a bare `t` means the column when the table has one named `t`."""
    return f"md5(ROW({alias}.*)::text)"


def weak(opaque: str) -> str:
    """The ETag header value: weak, because one entity state has several representations
    (formats, `$select`, gzip) that are equivalent but not byte-identical."""
    return f'W/"{opaque}"'


def parse(header: str | None) -> Tags | None:
    """The tags of an If-Match / If-None-Match value; None when the header is absent or empty.

    Unquoted tokens are taken as opaque tags too, so a sloppy client still gets an exact
    answer (they never match a real ETag unless they are one)."""
    if header is None or not header.strip():
        return None
    if header.strip() == "*":
        return "*"
    tags: list[str] = []
    for quoted, bare in _TAG.findall(header):
        tags.append(quoted if quoted or not bare else bare)
    return tuple(tags)


def matches(header: str | None, etag: str) -> bool:
    """Weak comparison of `etag` (a full `W/"..."` value) with a header's list (RFC 9110
    §8.8.3.2): two tags match when their opaque parts are equal, `W/` or not."""
    tags = parse(header)
    if tags is None:
        return False
    if tags == "*":
        return True
    opaque = etag.removeprefix("W/").strip('"')
    return opaque in tags


@dataclass(frozen=True, slots=True)
class Precondition:
    """If-Match / If-None-Match of a write (RFC 9110 §13.1.1, §13.1.2). OData 4.01 Protocol
    §11.4.1.1: the operation is invoked only when the condition holds; otherwise 412."""

    if_match: Tags | None = None
    if_none_match: Tags | None = None

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> Precondition:
        return cls(parse(headers.get("if-match")), parse(headers.get("if-none-match")))

    @property
    def present(self) -> bool:
        return self.if_match is not None or self.if_none_match is not None


NONE = Precondition()  # a write without conditional headers
