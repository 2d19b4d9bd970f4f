"""HTTP framing, in one place: reading a request body, sending a response or a cached entry.

Every answer goes out through `send_response` or `send_entry`: OData-Version, the request id,
ETag and 304 for If-None-Match, gzip when the client accepts it (cached entries are compressed
once), Content-Length, no body for HEAD. `read_body` inflates Salesforce's gzipped requests
within the size limit. `service_root` is the root URL as the client sees it. Nothing here
decides what to answer.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from odata import etags, response
from odata.cache import Entry, ResponseCache
from odata.errors import BadRequest, PayloadTooLarge
from service.types import RequestContext

GZIP_MIN = 1024
MAX_BODY = 8 * 2**20  # Salesforce's own request limit (spec §7)
_COMPRESSIBLE = ("application/json", "application/xml", "text/")


def service_root(scope: Mapping[str, Any], headers: Mapping[str, str], root: str) -> str:
    """`scheme://host/root/` as the client sees it (behind Heroku's router: X-Forwarded-*)."""
    scheme = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scope.get(
        "scheme", "http"
    )
    host = headers.get("x-forwarded-host", "").split(",")[0].strip() or headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}{root}/"


async def read_body(ctx: RequestContext) -> bytes:
    """The request body, gunzipped when Salesforce's "Compress Requests" is on (spec §6)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await ctx.receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY // 2**20} MB")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    if ctx.headers.get("content-encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(31)
            body = inflater.decompress(body, MAX_BODY + 1)
        except zlib.error:
            raise BadRequest("the request body is not valid gzip") from None
        if len(body) > MAX_BODY or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY // 2**20} MB")
    return body


def _head(ctx: RequestContext, version: str = response.ODATA_VERSION) -> list[tuple[bytes, bytes]]:
    return [
        (b"odata-version", version.encode()),
        (b"x-request-id", ctx.request_id.encode("latin-1", "replace")),
    ]


async def send_response(ctx: RequestContext, resp: response.Response) -> None:
    body = resp.body
    out = _head(ctx, resp.headers.get("OData-Version", response.ODATA_VERSION))
    headers, method, extra = ctx.headers, ctx.method, ctx.extra
    tag = resp.headers.get("ETag")
    if (
        tag is not None
        and resp.status == 200
        and method in ("GET", "HEAD")
        and etags.matches(headers.get("if-none-match"), tag)
    ):
        out += [(b"etag", tag.encode())]
        out += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
        await ctx.send({"type": "http.response.start", "status": 304, "headers": out})
        await ctx.send({"type": "http.response.body", "body": b""})
        return
    if resp.content_type:
        out.append((b"content-type", resp.content_type.encode()))
        if (
            len(body) >= GZIP_MIN
            and resp.content_type.startswith(_COMPRESSIBLE)
            and "gzip" in headers.get("accept-encoding", "")
        ):
            compressor = zlib.compressobj(5, zlib.DEFLATED, 31)
            body = compressor.compress(body) + compressor.flush()
            out.append((b"content-encoding", b"gzip"))
            out.append((b"vary", b"Accept-Encoding"))
    for name, value in (*resp.headers.items(), *extra.items()):
        if name == "OData-Version":
            continue  # in the head
        out.append((name.lower().encode(), value.encode("latin-1", "replace")))
    out.append((b"content-length", str(len(body)).encode()))
    await ctx.send({"type": "http.response.start", "status": resp.status, "headers": out})
    await ctx.send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def send_entry(ctx: RequestContext, cache: ResponseCache, entry: Entry) -> None:
    out = [*_head(ctx), (b"etag", entry.etag.encode())]
    out += [(k.lower().encode(), v.encode()) for k, v in ctx.extra.items()]
    # If-None-Match uses weak comparison (RFC 9110 §13.1.2).
    if etags.matches(ctx.headers.get("if-none-match"), entry.etag):
        await ctx.send({"type": "http.response.start", "status": 304, "headers": out})
        await ctx.send({"type": "http.response.body", "body": b""})
        return
    body = entry.body
    if entry.content_type:
        out.append((b"content-type", entry.content_type.encode()))
        if len(body) >= GZIP_MIN and "gzip" in ctx.headers.get("accept-encoding", ""):
            body = cache.gzipped(entry)
            out += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
    out.append((b"content-length", str(len(body)).encode()))
    await ctx.send({"type": "http.response.start", "status": entry.status, "headers": out})
    await ctx.send({"type": "http.response.body", "body": b"" if ctx.method == "HEAD" else body})
