"""AIP-158 pagination: opaque page tokens carrying the keyset position.

A token is bound to the filters it was issued for; reusing it with other
filters is INVALID_ARGUMENT rather than a silently wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
        key = [v.isoformat() if isinstance(v, datetime) else v for v in last_key]
        body = json.dumps({"f": self._fingerprint, "k": key}, default=str)
        return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")

    def decode(self, token: str, kinds: Sequence[type], field: str = "page_token") -> list[Any] | None:
        """The keyset position, or None for the first page.

        `kinds` are the types of the position's parts, in order (str, int,
        float, bool or datetime; datetimes travel as ISO text and come back
        as aware datetimes). The fingerprint is no secret, so anyone can
        build a token: every part is checked here, and a token of another
        shape is INVALID_ARGUMENT, never a database error."""
        if not token:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            body = json.loads(base64.urlsafe_b64decode(padded.encode()))
            key = body["k"]
            fingerprint = body["f"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(field, "is not a token this service issued") from exc
        if fingerprint != self._fingerprint:
            raise InvalidArgument(field, "was issued for a different query")
        if not isinstance(key, list) or len(key) != len(kinds):
            raise InvalidArgument(field, "is not a token this service issued")
        return [_part(field, value, kind) for value, kind in zip(key, kinds, strict=True)]


_MAX_INT = 2**63 - 1


def _part(field: str, value: Any, kind: type) -> Any:
    bad = InvalidArgument(field, "is not a token this service issued")
    if kind is datetime:
        if not isinstance(value, str):
            raise bad
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise bad from None
        if parsed.tzinfo is None:
            raise bad
        return parsed.astimezone(UTC)
    if kind is int:
        # bool is an int in Python; a token never carries one where an int belongs
        if not isinstance(value, int) or isinstance(value, bool) or not -_MAX_INT <= value <= _MAX_INT:
            raise bad
        return value
    if kind is float:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise bad
        return float(value)
    if kind is str:
        if not isinstance(value, str) or len(value) > 1024 or "\x00" in value:
            raise bad
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    raise TypeError(f"page token parts cannot be {kind.__name__}")


@dataclass(frozen=True)
class Page(Generic[ItemT]):  # noqa: UP046 - Python 3.11 has no PEP 695 syntax
    items: list[ItemT]
    next_page_token: str
