"""Log lines carry the id of the request they were written for."""

from __future__ import annotations

import io
import json
import logging

import pytest

from service import logs


@pytest.mark.parametrize("json_lines", [True, False])
def test_records_carry_the_current_request_id(json_lines: bool) -> None:
    stream = io.StringIO()
    log = logging.getLogger("r2sf.test_logs")
    log.addHandler(logs.handler(stream, json_lines=json_lines))
    log.propagate = False
    try:
        log.warning("outside a request")
        token = logs.request_id.set("sf-7f3a")
        try:
            log.warning("inside a request")
        finally:
            logs.request_id.reset(token)
    finally:
        log.handlers.clear()
        log.propagate = True
    outside, inside = stream.getvalue().splitlines()
    if json_lines:
        assert "request_id" not in json.loads(outside)
        assert json.loads(inside)["request_id"] == "sf-7f3a"
    else:
        assert "sf-7f3a" not in outside
        assert inside.endswith("inside a request [request sf-7f3a]")
