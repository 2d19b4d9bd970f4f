"""The response cache layer, in one place: which requests may use it, the key, lookup,
admission, and coalescing of identical misses.

The cache itself (an LRU by bytes, the doorkeeper, entries and their ETags) is odata/cache.py;
the data versions that decide whether an entry is current are odata/versions.py. This module
sends nothing: service/http.py does, and service/app.py decides when to ask it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from odata import response
from odata.cache import Doorkeeper, Entry, ResponseCache, etag
from odata.versions import VersionTracker
from service.types import CacheKey, RequestContext

Outcome = response.Response | Entry | None


class CacheLayer:
    """One worker's response cache, its admission and its in-flight computations."""

    def __init__(self, cache_mb: int, min_uses: int) -> None:
        self.cache = ResponseCache(cache_mb * 2**20) if cache_mb > 0 else None
        self.admission = Doorkeeper(min_uses) if min_uses > 1 else None
        self.coalesced = 0  # misses answered by an identical request that was already running
        self._inflight: dict[CacheKey, tuple[int, list[asyncio.Future[Outcome]]]] = {}

    def key(self, ctx: RequestContext) -> CacheKey | None:
        """The key of a request that may use the cache; None for every other.

        Only authorised reads use it (a waiter must be allowed to see what it joins), and not
        change tracking, which needs a fresh snapshot each time.
        """
        if (
            self.cache is None
            or ctx.method not in ("GET", "HEAD")
            or "track-changes" in ctx.headers.get("prefer", "")
            or not ctx.authorised
        ):
            return None
        headers = ctx.headers
        # Everything the response depends on besides the data: path, query, format, and the
        # scheme and host that go into @odata.context and nextLinks.
        return (
            ctx.scope.get("raw_path") or ctx.scope["path"],
            ctx.scope.get("query_string", b""),
            headers.get("accept", ""),
            headers.get("odata-maxversion", ""),
            headers.get("x-forwarded-proto", ""),
            headers.get("x-forwarded-host", ""),
            headers.get("host", ""),
        )

    def lookup(self, key: CacheKey, tracker: VersionTracker | None) -> Entry | None:
        if self.cache is None or tracker is None:
            return None
        return self.cache.lookup(key, tracker.version)

    def keep(self, key: CacheKey | None, result: response.Response) -> Outcome:
        """A current, cacheable answer as an entry (stored if worth keeping); else as it is."""
        if key is None or result.version is None or result.status != 200:
            return result
        assert self.cache is not None and result.entity_set
        entry = Entry(
            result.status,
            result.body,
            result.content_type,
            result.entity_set,
            result.version,
            # A single entity carries its own ETag (a hash of its row): it changes when that
            # entity does, not with every write to the table.
            result.headers.get("ETag") or etag(result.version, result.body),
            key,
        )
        # Admission (like nginx's proxy_cache_min_uses): keep an answer once its URL has been
        # asked `cache_min_uses` times under this data version, or at once when the URL's
        # entry from an earlier version is still there. Salesforce repeats its list-view URLs
        # constantly, and they are kept again right after a change; one-off queries, and URLs
        # asked less often than the data changes, would only churn memory and never be hit.
        # The answer is sent from the entry either way, with its ETag.
        if (
            self.admission is None
            or key in self.cache
            or self.admission.admit((key, result.version))
        ):
            self.cache.put(entry)
        return entry

    async def coalesce(
        self, key: CacheKey, tracker: VersionTracker, compute: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        """`compute()`, or the outcome of an identical computation already running.

        Identical requests that arrive while one is being computed wait for it instead of
        running the same query again (after a data change, a busy list view would otherwise
        send one exact count per waiting request). A request joins only if no change
        notification arrived since the running one started, so it gets no older data than it
        would have computed itself.
        """
        running = self._inflight.get(key)
        if running is not None and running[0] == tracker.changes:
            # Join: wait on a future of our own, resolved by the running request.
            joined: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            running[1].append(joined)
            shared = await joined
            if shared is not None:
                self.coalesced += 1
                return shared
            return await compute()
        # Lead: nothing is allocated for waiters unless one actually joins.
        mine: tuple[int, list[asyncio.Future[Outcome]]] = (tracker.changes, [])
        self._inflight[key] = mine
        outcome: Outcome = None
        try:
            outcome = await compute()
            return outcome
        finally:
            if self._inflight.get(key) is mine:
                del self._inflight[key]
            # Waiters get the outcome, or None (compute it yourselves) if this one failed.
            for waiter in mine[1]:
                if not waiter.done():
                    waiter.set_result(outcome)
