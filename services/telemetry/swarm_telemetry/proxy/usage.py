"""The provider's own account of a call: `usage` of a Messages answer, or
of a stream (server-sent events), read as it passes through.

A stream reports usage twice: `message_start` carries the input side
(input, cache write and cache read tokens) and `message_delta` the output
tokens so far, cumulative (newer API versions repeat the input side there
too). The last value of each field wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from swarm_telemetry.domain import Tokens

FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
STOP_EVENT = "message_stop"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class UsageReader:
    """Usage collected from a Messages answer or its stream's events."""

    seen: dict[str, int] = field(default_factory=dict)

    def add(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name in FIELDS:
            value = _count(usage.get(name))
            if value is not None:
                self.seen[name] = value

    @property
    def tokens(self) -> Tokens | None:
        """None when the provider reported nothing (the call produced nothing billable)."""
        if not self.seen:
            return None
        return Tokens(*(self.seen.get(name, 0) for name in FIELDS))

    def message(self, body: bytes) -> None:
        """A non-streamed answer."""
        try:
            answer = json.loads(body)
        except ValueError:
            return
        if isinstance(answer, dict):
            self.add(answer.get("usage"))

    def event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self.add(data["message"].get("usage"))
        elif kind == "message_delta":
            self.add(data.get("usage"))


@dataclass(frozen=True)
class Event:
    """One server-sent event: its bytes exactly as received, and what it says."""

    raw: bytes
    name: str
    data: dict[str, Any] | None


class EventSplitter:
    """Cuts a byte stream into whole server-sent events (blank-line separated)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        while (end := self._buffer.find(b"\n\n")) >= 0:
            raw, self._buffer = self._buffer[: end + 2], self._buffer[end + 2 :]
            yield _parse(raw)

    def rest(self) -> bytes:
        """Bytes after the last whole event (a stream cut short)."""
        rest, self._buffer = self._buffer, b""
        return rest


def _parse(raw: bytes) -> Event:
    name, data_lines = "", []
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data_lines.append(line[5:].lstrip())
    data: dict[str, Any] | None = None
    if data_lines:
        try:
            parsed = json.loads("\n".join(data_lines))
        except ValueError:
            parsed = None
        data = parsed if isinstance(parsed, dict) else None
    if not name and data is not None and isinstance(data.get("type"), str):
        name = data["type"]
    return Event(raw, name, data)
