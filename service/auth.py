"""HTTP Basic authentication ("Password Authentication" in a Salesforce External Data Source).

Credentials come from ODATA_CREDENTIALS; several may be valid at once so that a password can be
rotated without downtime. Comparison is constant-time and never logs what was sent.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from service.config import Credential


class BasicAuth:
    def __init__(self, credentials: tuple[Credential, ...]) -> None:
        self._pairs = [(c.user.encode(), c.password.encode()) for c in credentials]
        # Header values already checked in constant time, so a repeat costs one dict lookup.
        # Only exact, previously verified values are stored; a wrong header never gets in.
        self._verified: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._pairs)

    def user(self, authorization: str | None) -> str | None:
        """The authenticated user name, or None when the header does not match a credential."""
        if not authorization:
            return None
        known = self._verified.get(authorization)
        if known is not None:
            return known
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        found = None
        for known_user, known_password in self._pairs:
            # Evaluate both comparisons for every credential: no early exit to time.
            ok = hmac.compare_digest(user, known_user) & hmac.compare_digest(
                password, known_password
            )
            if ok and found is None:
                found = known_user.decode()
        if found is not None and len(self._verified) < 64:
            self._verified[authorization] = found
        return found
