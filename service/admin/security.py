"""Who may use the console, and CSRF tokens for its forms.

The console has its own credential (ADMIN_CREDENTIALS, realm "r2sf console"): Salesforce's OData
credential is refused here, and without an admin credential the console is off. Browsers send
Basic credentials with cross-site form posts too, so every POST carries a token derived from a
key only this deployment knows and the user's name; a page from another site cannot read it.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from odata import response
from service.auth import BasicAuth
from service.config import Settings

REALM = 'Basic realm="r2sf console", charset="UTF-8"'


def is_console_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


class ConsoleGate:
    def __init__(self, settings: Settings) -> None:
        self.auth = BasicAuth(settings.admin_credentials)
        secret = "\n".join(sorted(f"{c.user}:{c.password}" for c in settings.admin_credentials))
        self._key = hmac.new(secret.encode(), b"r2sf console csrf", hashlib.sha256).digest()

    @property
    def enabled(self) -> bool:
        return self.auth.enabled

    def covers(self, path: str) -> bool:
        """The console's pages, and the status page once there is an admin credential (the
        OData credential then reads OData and /metrics, nothing else)."""
        return is_console_path(path) or (self.enabled and path == "/")

    def admit(
        self, path: str, headers: dict[str, str]
    ) -> tuple[str | None, response.Response | None]:
        """(the admin user, None) or (None, the refusal to send)."""
        if not self.enabled:
            return None, _html(
                404,
                "The console is off: set the config var ADMIN_CREDENTIALS=user:password"
                " (not the credential Salesforce uses) to turn it on.",
            )
        user = self.auth.user(headers.get("authorization"))
        if user is None:
            refusal = _html(401, "Sign in with the console's credential (ADMIN_CREDENTIALS).")
            refusal.headers["WWW-Authenticate"] = REALM
            return None, refusal
        return user, None

    def token(self, user: str) -> str:
        return hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()

    def check_post(self, user: str, sent: str, headers: dict[str, str]) -> bool:
        """True for a form post from our own page: the token matches, and the Origin (when the
        browser sends one) is this host."""
        origin = headers.get("origin")
        if origin and origin != "null":
            host = headers.get("x-forwarded-host") or headers.get("host", "")
            if urlsplit(origin).netloc != host.split(",")[0].strip():
                return False
        return hmac.compare_digest(sent.encode(), self.token(user).encode())


def _html(status: int, message: str) -> response.Response:
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>r2sf console</title>"
        f"<p>{message}</p></html>"
    ).encode()
    return response.Response(
        status, body, "text/html; charset=utf-8", {"Cache-Control": "no-store"}
    )
