"""Whether the ticket being worked may still be worked.

The agent loop's heartbeat learns first that a lease is gone (the ticket was
cancelled, or its lease expired and another agent took it over); the work
function, which runs in the loop's thread, learns it here. The tracked LLM
client asks before every call, so a cancelled ticket costs at most the call
already under way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_lost: ContextVar[threading.Event | None] = ContextVar("swarm_lease_lost", default=None)


class LeaseGone(Exception):
    """The ticket's lease is gone: stop working on it."""


@contextmanager
def working(lost: threading.Event) -> Iterator[None]:
    """While the work runs, `lost` set by the heartbeat means stop."""
    token = _lost.set(lost)
    try:
        yield
    finally:
        _lost.reset(token)


def check() -> None:
    """LeaseGone when the heartbeat found the lease gone."""
    lost = _lost.get()
    if lost is not None and lost.is_set():
        raise LeaseGone("the ticket's lease is gone (cancelled, or taken over): stopping the work")
