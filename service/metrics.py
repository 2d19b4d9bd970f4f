"""Prometheus text-format metrics for one worker process (label `worker` = its pid).

Counters and a latency histogram kept in plain Python numbers: the hot path only adds to
them. Each uvicorn worker reports its own series; Prometheus sums them across workers. The
gauges (cache, counts, change log, data versions, follower, sync runs) are read here from the
parts that keep them, when /metrics is asked.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from service.types import Gauge

if TYPE_CHECKING:
    import asyncpg

    from odata.service import ODataService
    from odata.versions import VersionTracker
    from service.caching import CacheLayer

log = logging.getLogger("r2sf.service")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (kind, status)
        self.latency = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.worker = str(os.getpid())

    def observe(self, kind: str, status: int, seconds: float) -> None:
        self.requests[(kind, status)] += 1
        self.latency[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def render(self, gauges: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> str:
        w = self.worker
        lines = [
            "# HELP r2sf_requests_total HTTP requests answered, by kind and status.",
            "# TYPE r2sf_requests_total counter",
        ]
        for (kind, status), n in sorted(self.requests.items()):
            lines.append(f'r2sf_requests_total{{worker="{w}",kind="{kind}",status="{status}"}} {n}')
        lines += [
            "# HELP r2sf_request_seconds Time to answer a request.",
            "# TYPE r2sf_request_seconds histogram",
        ]
        total = 0
        for bound, n in zip((*BUCKETS, float("inf")), self.latency, strict=True):
            total += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'r2sf_request_seconds_bucket{{worker="{w}",le="{le}"}} {total}')
        lines.append(f'r2sf_request_seconds_sum{{worker="{w}"}} {self.latency_sum}')
        lines.append(f'r2sf_request_seconds_count{{worker="{w}"}} {self.latency_count}')
        seen: set[str] = set()
        for name, help_text, labels, value in gauges():
            if name not in seen:
                kind = "counter" if name.endswith("_total") else "gauge"
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                seen.add(name)
            rendered = ",".join(f'{k}="{v}"' for k, v in {"worker": w, **labels}.items())
            lines.append(f"{name}{{{rendered}}} {value}")
        return "\n".join(lines) + "\n"


def cache_gauges(layer: CacheLayer) -> list[Gauge]:
    cache = layer.cache
    if cache is None:
        return []
    return [
        ("r2sf_cache_hits_total", "Responses served from the cache.", {}, cache.hits),
        ("r2sf_cache_misses_total", "Cacheable requests not in the cache.", {}, cache.misses),
        (
            "r2sf_cache_coalesced_total",
            "Misses answered by an identical request already being computed.",
            {},
            layer.coalesced,
        ),
        ("r2sf_cache_evictions_total", "Entries evicted to stay in budget.", {}, cache.evictions),
        ("r2sf_cache_bytes", "Bytes held by the response cache.", {}, cache.bytes),
        ("r2sf_cache_entries", "Entries in the response cache.", {}, len(cache)),
    ]


def odata_gauges(
    odata: ODataService | None, change_log: dict[str, int], tracker: VersionTracker | None
) -> list[Gauge]:
    out: list[Gauge] = []
    if odata is not None:
        counts = odata.counts
        out += [
            ("r2sf_count_cache_hits_total", "Counts answered from memory.", {}, counts.hits),
            ("r2sf_count_cache_misses_total", "Counts computed by PostgreSQL.", {}, counts.misses),
        ]
    for table, rows in sorted(change_log.items()):
        out.append(
            (
                "r2sf_change_log_rows",
                "Changes kept for delta links per tracked table (as of the last pruning).",
                {"table": table},
                rows,
            )
        )
    if tracker is not None:
        out.append(
            ("r2sf_listening", "1 while change notifications arrive.", {}, int(tracker.listening))
        )
        for name in sorted(tracker.depends):
            version = tracker.version(name)
            if version is not None:
                out.append(
                    (
                        "r2sf_data_version",
                        "Current data version per entity set.",
                        {"entity_set": name},
                        version,
                    )
                )
    return out


async def sync_gauges(pool: asyncpg.Pool | None) -> list[Gauge]:
    """The sync jobs' last success and failure, from r2sf.sync_runs (nothing on error)."""
    from service.status import sync_gauges as read

    if pool is None:
        return []
    try:
        async with pool.acquire(timeout=5) as conn:
            return await asyncio.wait_for(read(conn), 5)
    except Exception as exc:
        log.warning("metrics: cannot read the sync runs: %s", exc)
        return []


async def follower_gauges(
    read_pool: asyncpg.Pool | None, pool: asyncpg.Pool | None, odata: ODataService | None
) -> list[Gauge]:
    """Replay lag of the follower and how often reads fell back to the primary."""
    from service import database

    if read_pool is None or read_pool is pool or odata is None:
        return []
    out: list[Gauge] = [
        (
            "r2sf_follower_fallbacks_total",
            "Reads answered by the primary because the follower had not replayed the"
            " current data version.",
            {},
            odata.follower_fallbacks,
        )
    ]
    try:
        lag = await asyncio.wait_for(database.replay_lag(read_pool), 5)
    except Exception as exc:
        log.warning("metrics: cannot read the follower's replay lag: %s", exc)
        return out
    if lag is not None:
        out += [
            (
                "r2sf_follower_replay_lag_seconds",
                "Age of the last transaction the follower replayed, while it has WAL to"
                " replay (0 when caught up).",
                {},
                lag[0],
            ),
            (
                "r2sf_follower_replay_lag_bytes",
                "WAL the follower received but has not replayed yet.",
                {},
                lag[1],
            ),
        ]
    return out
