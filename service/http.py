"""HTTP facts about a request that several parts of the app need, kept out of app.py.

The service root is what nextLinks, `@odata.context` and the status page's links start with. It
reads only the ASGI scope and headers; it never answers a request itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
