"""The test seam of sync/redshift.py: with `R2SF_REDSHIFT_CONNECT=tests.redshift_connect_recorder:
connect`, the extract process and `r2sf check` call this instead of `redshift_connector.connect`.

It checks the driver's own `connect()` accepts every argument (an unknown name is a TypeError,
as the driver would raise), appends the arguments as one JSON line to the file named by
`R2SF_TEST_CONNECT_LOG`, and refuses the connection: IAM and Serverless need AWS, and there is
none here. Nothing of r2sf's is replaced: what is recorded is exactly what the driver receives.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import redshift_connector


def connect(**kwargs: Any) -> Any:
    inspect.signature(redshift_connector.connect).bind(**kwargs)
    with open(os.environ["R2SF_TEST_CONNECT_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(kwargs) + "\n")
    raise redshift_connector.ProgrammingError("connect arguments recorded by the test seam")
