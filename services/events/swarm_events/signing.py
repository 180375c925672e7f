"""Webhook signatures receivers can check with an off-the-shelf library.

Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, `whsec_` secrets) through
the `standardwebhooks` package itself, plus the spec's own
`X-Swarm-Signature: sha256=<hex HMAC-SHA256 of the body>` and `X-Swarm-Event`.
During a secret rotation the body is signed with both secrets: Standard
Webhooks lists several signatures separated by spaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secrets_in_use(
    current: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign now: the current one first, then the previous
    one while its rotation grace period lasts."""
    if previous and previous_expires_at is not None and previous_expires_at > now:
        return [current, previous]
    return [current]


def swarm_signature(secret: str, body: str) -> str:
    """The spec's X-Swarm-Signature: HMAC-SHA256 keyed with the secret string."""
    return "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


def signature_headers(
    event_id: str, event_type: str, timestamp: datetime, body: str, secrets_in_use: Sequence[str]
) -> dict[str, str]:
    """Headers for one delivery; `secrets_in_use` is the current secret first,
    then any previous one still inside its rotation grace period."""
    signatures = " ".join(Webhook(s).sign(event_id, timestamp, body) for s in secrets_in_use)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
        "X-Swarm-Signature": swarm_signature(secrets_in_use[0], body),
        "X-Swarm-Event": event_type,
        "Content-Type": "application/json",
    }
