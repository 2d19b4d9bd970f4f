"""The service's vocabulary: ASGI's types, and the `RequestContext` each request carries.

A request's context is built once, when it arrives (headers decoded, request id chosen, the
credentials checked once), and handed to every step after: routing, the cache layer
(service/caching.py), HTTP framing (service/http.py). It holds no behaviour of its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# What a response depends on besides the data (see service/caching.py).
CacheKey = tuple[str | bytes, ...]
# A /metrics sample: name, help text, labels, value.
Gauge = tuple[str, str, dict[str, str], float]


@dataclass(slots=True)
class RequestContext:
    scope: Scope
    receive: Receive
    send: Send
    headers: dict[str, str]  # lower-case names, latin-1 decoded
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    authorised: bool = False  # the credentials were checked (or none are required)
    extra: dict[str, str] = field(default_factory=dict)  # headers every answer carries

    @classmethod
    def of(cls, scope: Scope, receive: Receive, send: Send, new_id: Callable[[], str]) -> RequestContext:  # fmt: skip
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        return cls(scope, receive, send, headers, headers.get("x-request-id") or new_id())

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def path(self) -> str:
        path: str = self.scope["path"]
        return path

    @property
    def raw_path(self) -> str:
        """The path as sent, still percent-encoded."""
        raw: bytes = self.scope.get("raw_path") or self.scope["path"].encode()
        return raw.decode("latin-1")

    @property
    def query(self) -> str:
        query: bytes = self.scope.get("query_string", b"")
        return query.decode("latin-1")
