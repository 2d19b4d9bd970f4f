"""Prometheus text-format metrics for one worker process (label `worker` = its pid).

Counters and a latency histogram kept in plain Python numbers: the hot path only adds to
them. Each uvicorn worker reports its own series; Prometheus sums them across workers.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Callable, Iterable

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
