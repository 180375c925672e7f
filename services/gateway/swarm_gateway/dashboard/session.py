"""The dashboard's browser session: an encrypted, authenticated cookie.

The cookie is a Fernet token (AES-CBC + HMAC-SHA256) over the tenant id, the
API key the user pasted (each page authenticates it again exactly as the
REST gateway does, so a revoked key stops working at once), a CSRF token and
an expiry. It is HttpOnly and SameSite=Strict; every POST form carries the
CSRF token as well, compared in constant time.

The key is `SWARM_GATEWAY_DASHBOARD_SESSION_KEY`; unset, each gateway process
makes a random one, so sessions end when it restarts and are not shared by
replicas behind a load balancer (set the same key on every replica).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "swarm_session"
# A login form's own CSRF token (double-submit: a cookie and a form field).
LOGIN_COOKIE = "swarm_login_csrf"


@dataclass(frozen=True)
class Session:
    tenant_id: str
    api_key: str
    csrf: str
    expires_at: float

    def is_expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at

    def csrf_matches(self, submitted: str) -> bool:
        return bool(submitted) and hmac.compare_digest(submitted.encode(), self.csrf.encode())


class SessionCodec:
    def __init__(self, key: str, lifetime_seconds: float) -> None:
        self.fernet = Fernet(key.encode() if key else Fernet.generate_key())
        self.lifetime = lifetime_seconds

    def new(self, tenant_id: str, api_key: str) -> Session:
        return Session(tenant_id, api_key, secrets.token_urlsafe(32), time.time() + self.lifetime)

    def encode(self, session: Session) -> str:
        return self.fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def decode(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None when absent, forged, tampered with or expired."""
        if not cookie:
            return None
        try:
            data = json.loads(self.fernet.decrypt(cookie.encode(), ttl=int(self.lifetime) + 60))
            session = Session(
                str(data["tenant_id"]), str(data["api_key"]), str(data["csrf"]), float(data["expires_at"])
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return None if session.is_expired() else session


def valid_fernet_key(value: str) -> bool:
    """Whether `value` is a Fernet key: 32 bytes, url-safe base64."""
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except ValueError:
        return False
