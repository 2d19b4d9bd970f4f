"""The OData error hierarchy: every failure a client can see, with a stable code and status.

Raised anywhere in the request pipeline and rendered exactly once, by the handler in
`odata.response`. Messages are written for the person reading them in Salesforce or curl; they
never carry SQL, stack traces or secrets.

    ODataError
    ├── BadRequest (400)
    │   ├── QuerySyntaxError        a query option or key that does not parse
    │   ├── InvalidQueryOption      an unknown, repeated or out-of-range option
    │   ├── UnknownProperty         a name that is not in the entity type (with a suggestion)
    │   ├── TypeMismatch            operands or arguments of incompatible types
    │   ├── InvalidBody             a request body that is not a valid entity
    │   └── ConstraintViolation     a written value that breaks a CHECK rule of the table
    ├── Unauthorized (401)          with `WWW-Authenticate: Basic`
    ├── Forbidden (403)
    ├── NotFound (404)
    │   ├── ResourceNotFound        no such entity set, property or path
    │   └── EntityNotFound          the key names no entity
    ├── MethodNotAllowed (405)
    ├── NotAcceptable (406)
    ├── Conflict (409)
    ├── Gone (410)                  a delta link that can no longer be served (says what to do)
    ├── PreconditionFailed (412)
    ├── PayloadTooLarge (413)
    ├── UriTooLong (414)
    ├── UnsupportedMediaType (415)
    ├── NotImplementedFeature (501) valid OData that this service does not implement
    └── ServiceError (500)          a fault on our side; the message is generic
        ├── ServiceUnavailable (503)
        └── CatalogError            the configuration asks for a relation that cannot be
                                    exposed: raised at start-up (where it becomes a
                                    ConfigError) and on reload (logged); never sent to a client

Every code is listed in docs/errors.md with what the client or the admin does about it.
"""

from __future__ import annotations


class ODataError(Exception):
    status = 500
    code: str  # each class below has its own (docs/errors.md); the root is never raised

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ODataError):
    status = 400
    code = "BadRequest"


class QuerySyntaxError(BadRequest):
    code = "InvalidSyntax"

    def __init__(
        self, message: str, *, target: str | None = None, position: int | None = None
    ) -> None:
        super().__init__(message, target=target)
        self.position = position


class InvalidQueryOption(BadRequest):
    code = "InvalidQueryOption"


class UnknownProperty(BadRequest):
    code = "UnknownProperty"


class TypeMismatch(BadRequest):
    code = "TypeMismatch"


class InvalidBody(BadRequest):
    code = "InvalidBody"


class ConstraintViolation(BadRequest):
    code = "ConstraintViolation"


class Unauthorized(ODataError):
    status = 401
    code = "Unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="r2sf", charset="UTF-8"'}


class Forbidden(ODataError):
    status = 403
    code = "Forbidden"


class NotFound(ODataError):
    status = 404
    code = "NotFound"


class ResourceNotFound(NotFound):
    code = "ResourceNotFound"


class EntityNotFound(NotFound):
    code = "EntityNotFound"


class MethodNotAllowed(ODataError):
    status = 405
    code = "MethodNotAllowed"

    def __init__(self, message: str, *, allow: tuple[str, ...], target: str | None = None) -> None:
        super().__init__(message, target=target)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class NotAcceptable(ODataError):
    status = 406
    code = "NotAcceptable"


class Conflict(ODataError):
    status = 409
    code = "Conflict"


class Gone(ODataError):
    status = 410
    code = "DeltaLinkGone"


class PreconditionFailed(ODataError):
    status = 412
    code = "PreconditionFailed"


class PayloadTooLarge(ODataError):
    status = 413
    code = "PayloadTooLarge"


class UriTooLong(ODataError):
    status = 414
    code = "UriTooLong"


class UnsupportedMediaType(ODataError):
    status = 415
    code = "UnsupportedMediaType"


class NotImplementedFeature(ODataError):
    status = 501
    code = "NotImplemented"


class ServiceError(ODataError):
    status = 500
    code = "InternalError"


class ServiceUnavailable(ServiceError):
    status = 503
    code = "ServiceUnavailable"


class CatalogError(ServiceError):
    """A relation the configuration asks for cannot be exposed; the message says how to fix it."""

    code = "CatalogError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
