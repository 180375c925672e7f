"""Checks for fields arriving from callers; each failure names its field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from swarmcommon.errors import InvalidArgument

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
MAX_NAME_ID = 128


def required_text(field: str, value: str, max_len: int) -> str:
    value = value.strip()
    if not value:
        raise InvalidArgument(field, "is required")
    return bounded_text(field, value, max_len)


def bounded_text(field: str, value: str, max_len: int) -> str:
    if len(value) > max_len:
        raise InvalidArgument(field, f"is too long ({len(value)} > {max_len} characters)")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    return value


def name_id(field: str, value: str) -> str:
    """A caller-chosen identifier such as a tenant or agent id."""
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_NAME_ID:
        raise InvalidArgument(field, f"is too long ({len(value)} > {MAX_NAME_ID} characters)")
    if not _NAME_RE.match(value):
        raise InvalidArgument(
            field,
            "may contain only letters, digits and _ . : @ - and must start with a letter or digit",
        )
    return value


def uuid_id(field: str, value: str) -> str:
    """An id this platform issued (a UUID in canonical form)."""
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise InvalidArgument(field, f"is not a valid id: {value[:64]!r}") from exc
    return str(parsed)


def uuid_ids(field: str, values: Sequence[str], max_count: int) -> list[str]:
    if not values:
        raise InvalidArgument(field, "must name at least one id")
    if len(values) > max_count:
        raise InvalidArgument(field, f"names too many ids ({len(values)} > {max_count})")
    return list(dict.fromkeys(uuid_id(f"{field}[{i}]", v) for i, v in enumerate(values)))


def optional_request_id(value: str, field: str = "request_id") -> str | None:
    if not value:
        return None
    return name_id(field, value)
