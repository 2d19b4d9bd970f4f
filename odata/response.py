"""Frame response bodies and headers: context URLs, nextLinks, annotations, errors.

The JSON of a collection or entity arrives finished from PostgreSQL; this module only wraps it
with `@odata.context`, `@odata.count` and `@odata.nextLink`, and renders every `ODataError` in
the OData JSON error format. It never touches the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import quote

from odata.errors import ODataError
from odata.request import Format

ODATA_VERSION = "4.0"
ODATA_VERSION_401 = "4.01"  # what an answer in a 4.01-only format (CSDL JSON) says it is
XML = "application/xml"
TEXT = "text/plain;charset=utf-8"
OCTETS = "application/octet-stream"

# Characters left unescaped in nextLinks so they stay readable (RFC 3986 sub-delims and `$`).
_QUERY_SAFE = "$,()'*:@/!;"


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)
    # Set on cacheable reads: the entity set and its data version read BEFORE the query ran.
    entity_set: str | None = None
    version: int | None = None


def json_type(fmt: Format) -> str:
    text = f"application/json;odata.metadata={fmt.metadata}"
    if fmt.ieee754:
        text += ";IEEE754Compatible=true"
    return text


def context_url(
    service_root: str, set_name: str, select: tuple[str, ...] | None, suffix: str = ""
) -> str:
    """`{root}$metadata#Set(a,b){suffix}` (JSON Format §10)."""
    selection = f"({','.join(select)})" if select else ""
    return f"{service_root}$metadata#{set_name}{selection}{suffix}"


def next_link(
    service_root: str, set_name: str, raw: dict[str, str], continuation: dict[str, str]
) -> str:
    """The request's filter, search, order, selection and count, and where the next page starts
    (`skiptoken`, or `skip` and `top`)."""
    kept: list[tuple[str, str]] = [
        (k, raw[k])
        for k in ("filter", "search", "orderby", "select", "count", "format")
        if k in raw
    ]
    kept.extend(continuation.items())
    query = "&".join(f"${k}={quote(v, safe=_QUERY_SAFE)}" for k, v in kept)
    return f"{service_root}{quote(set_name)}?{query}"


def delta_link(service_root: str, set_name: str, raw: dict[str, str], token: str) -> str:
    """A delta link keeps what selects the rows and their shape, never paging (§11.3)."""
    kept: list[tuple[str, str]] = [
        (k, raw[k]) for k in ("filter", "search", "select", "format") if k in raw
    ]
    kept.append(("deltatoken", token))
    query = "&".join(f"${k}={quote(v, safe=_QUERY_SAFE)}" for k, v in kept)
    return f"{service_root}{quote(set_name)}?{query}"


def deleted_entry(service_root: str, set_name: str, entity_id: str, reason: str) -> str:
    """A deleted entity in a 4.0 delta response (JSON Format 4.0 §15.6)."""
    context = f"{service_root}$metadata#{set_name}/$deletedEntity"
    return json.dumps(
        {"@odata.context": context, "id": entity_id, "reason": reason},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def delta(
    fmt: Format, context: str, entries: list[str], next_link: str | None, delta_link: str | None
) -> Response:
    """A delta response (JSON Format 4.0 §15): changed entities and deleted entries."""
    parts = [] if fmt.metadata == "none" else [_annotation("context", context + "/$delta")]
    parts.append('"value":[' + ",".join(entries) + "]")
    if next_link is not None:
        parts.append(_annotation("nextLink", next_link))
    if delta_link is not None:
        parts.append(_annotation("deltaLink", delta_link))
    return Response(200, ("{" + ",".join(parts) + "}").encode(), json_type(fmt))


def _annotation(name: str, value: object) -> str:
    return f'"@odata.{name}":{json.dumps(value, ensure_ascii=False)}'


def collection(
    fmt: Format,
    context: str,
    count: int | None,
    body: str,
    link: str | None,
    delta_link: str | None = None,
) -> Response:
    parts = [] if fmt.metadata == "none" else [_annotation("context", context)]
    if count is not None:
        parts.append(f'"@odata.count":{json.dumps(str(count) if fmt.ieee754 else count)}')
    parts.append(f'"value":{body}')
    if link is not None:
        parts.append(_annotation("nextLink", link))
    if delta_link is not None:
        parts.append(_annotation("deltaLink", delta_link))
    return Response(200, ("{" + ",".join(parts) + "}").encode(), json_type(fmt))


def entity(fmt: Format, context: str, body: str, etag: str | None = None) -> Response:
    """A single entity; with an `etag`, also its `ETag` header and `@odata.etag` (JSON Format
    §3.1.1: minimal metadata carries the ETag of an entity)."""
    headers = {"ETag": etag} if etag is not None else {}
    if fmt.metadata == "none" or body == "{}":
        return Response(200, body.encode(), json_type(fmt), headers)
    parts = [_annotation("context", context)]
    if etag is not None:
        parts.append(_annotation("etag", etag))
    return Response(200, ("{" + ",".join(parts) + "," + body[1:]).encode(), json_type(fmt), headers)


def property_value(fmt: Format, context: str, value_json: str) -> Response:
    parts = [] if fmt.metadata == "none" else [_annotation("context", context)]
    parts.append(f'"value":{value_json}')
    return Response(200, ("{" + ",".join(parts) + "}").encode(), json_type(fmt))


def plain(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), TEXT)


def error(exc: ODataError, request_id: str | None = None) -> Response:
    inner: dict[str, object] = {"code": exc.code, "message": exc.message}
    if exc.target:
        inner["target"] = exc.target
    if request_id and exc.status >= 500:
        inner["details"] = [{"code": "RequestId", "message": request_id}]
    body = json.dumps({"error": inner}, ensure_ascii=False).encode()
    return Response(exc.status, body, "application/json;odata.metadata=minimal", exc.headers())
