"""Failure alerts: one JSON POST to the operator's webhook when a job starts failing, and one
when it recovers (not on every failed retry).

The body carries `text` (what Slack and Teams incoming webhooks display) and the fields a
program needs. Delivery is best effort: a webhook that is down is logged, never fails a run.
It never sends a URL, SQL or a password: messages are the run's own (already redacted) errors.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

from sync.progress import Reporter

TIMEOUT = 10.0  # seconds for the whole POST


def failed(job: str, code: str, message: str) -> dict[str, Any]:
    return {
        "text": f"r2sf: job {job} FAILED: {message}",
        "job": job,
        "status": "failed",
        "code": code,
        "error": message,
        "at": datetime.now(UTC).isoformat(),
    }


def recovered(job: str, run_id: int | None) -> dict[str, Any]:
    return {
        "text": f"r2sf: job {job} recovered: the latest run succeeded",
        "job": job,
        "status": "recovered",
        "run_id": run_id,
        "at": datetime.now(UTC).isoformat(),
    }


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return int(response.status)


async def send(url: str, payload: dict[str, Any], rep: Reporter) -> bool:
    """POST `payload`; True when the webhook answered 2xx. Failures are logged only."""
    body = json.dumps(payload).encode()
    try:
        status = await asyncio.wait_for(asyncio.to_thread(_post, url, body), TIMEOUT + 1)
    except Exception as exc:
        rep.log("alert_failed", job=payload["job"], error=type(exc).__name__ + f": {exc}")
        return False
    rep.log("alert_sent", job=payload["job"], status=payload["status"], http=status)
    return 200 <= status < 300
