"""The one place an error becomes an HTTP response, and the catalogue of every error code.

The error trees live with the code that raises them: odata/errors.py (everything a client can
be answered with, including the service's own refusals: 401, 403, 414...) and sync/errors.py
(runs, and `ConfigError`, which every command shares). A refusal anywhere raises; `render` turns
whatever was raised while answering a request into the OData JSON error, logging what the
client cannot fix. docs/errors.md publishes `catalogue()`; tests/test_errors.py keeps them equal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

from odata import response
from odata.errors import BadRequest, NotImplementedFeature, ODataError, ServiceError
from sync import errors as sync_errors

log = logging.getLogger("r2sf.service")
_E = TypeVar("_E", bound=Exception)


def render(exc: BaseException, request_id: str) -> response.Response:
    """The response for an exception raised while answering a request (never a traceback)."""
    if isinstance(exc, RecursionError):
        exc = BadRequest("the request is nested too deeply; simplify it")
    elif not isinstance(exc, ODataError):
        log.error("request %s failed with an unexpected error", request_id, exc_info=exc)
        exc = ServiceError(f"internal error (request id {request_id})")
    elif exc.status >= 500 and not isinstance(exc, NotImplementedFeature):
        log.error("request %s failed: %s", request_id, exc.message)
    return response.error(exc, request_id)


@dataclass(frozen=True)
class Entry:
    package: str  # "odata" (an HTTP answer) or "sync" (a command's or a run's failure)
    code: str
    status: int  # the HTTP status, or for sync/ the process exit code
    cls: type[Exception]


def catalogue() -> list[Entry]:
    """Every error class of the two trees, with its stable code (the roots are never raised)."""
    odata = [Entry("odata", c.code, c.status, c) for c in _tree(ODataError)]
    sync = [Entry("sync", c.code, c.exit_code, c) for c in _tree(sync_errors.Error)]
    return odata + sync


def _tree(root: type[_E]) -> list[type[_E]]:
    """The root's subclasses defined in the root's own module, depth first."""
    found: list[type[_E]] = []
    for cls in root.__subclasses__():
        if cls.__module__ == root.__module__:
            found += [cls, *_tree(cls)]
    return found
