"""Production transport rules applied to every request before authentication and the cache.

Heroku's router terminates TLS and tells the app the client's scheme in `X-Forwarded-Proto`.
A request that arrived over plain HTTP has already sent its Basic credentials in clear text, so
it is refused rather than answered: `refuse_plain_http` raises a 403 that service/errors.py
renders. This module only decides; it never logs header values.
"""

from __future__ import annotations

from odata.errors import Forbidden
from service.config import Settings

MESSAGE = (
    "plain HTTP is refused: use the https:// URL (the Basic credentials of this request crossed "
    "the network unencrypted; consider rotating them). Operators can allow HTTP with "
    "[server] require_https = false"
)


def refuse_plain_http(headers: dict[str, str], settings: Settings) -> None:
    """Raise Forbidden (403) when a proxy reports that the client used plain HTTP.

    Without the header (a direct connection: local runs, tests, health checks inside the
    container) nothing is refused: only the router knows what the client used.
    """
    if not settings.file.server.require_https:
        return
    # With several proxies the header is a list; the first entry is the client's own scheme.
    proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if proto == "http":
        raise Forbidden(MESSAGE)
