"""AIP-158 pagination: opaque page tokens carrying the keyset position.

A token is bound to the filters it was issued for; reusing it with other
filters is INVALID_ARGUMENT rather than a silently wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from swarmcommon.errors import InvalidArgument

ItemT = TypeVar("ItemT")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument(field, f"must not be negative (got {value})")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class PageToken:
    """Encodes the sort key of the last row returned plus a filter fingerprint."""

    filters: Sequence[Any]

    @property
    def _fingerprint(self) -> str:
        raw = json.dumps(list(self.filters), default=str, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def encode(self, last_key: Sequence[Any]) -> str:
        body = json.dumps({"f": self._fingerprint, "k": list(last_key)}, default=str)
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    def decode(self, token: str, field: str = "page_token") -> list[Any] | None:
        """The keyset position, or None for the first page."""
        if not token:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            body = json.loads(base64.urlsafe_b64decode(padded.encode()))
            key = body["k"]
            fingerprint = body["f"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(field, "is not a token this service issued") from exc
        if fingerprint != self._fingerprint or not isinstance(key, list):
            raise InvalidArgument(field, "was issued for a different query")
        return key


@dataclass(frozen=True)
class Page(Generic[ItemT]):  # noqa: UP046 - Python 3.11 has no PEP 695 syntax
    items: list[ItemT]
    next_page_token: str
