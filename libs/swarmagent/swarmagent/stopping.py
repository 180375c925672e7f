"""The agent's side of a lease while its work runs: whether the ticket may
still be worked, and how far the work has come.

The agent loop's heartbeat learns first that a lease is gone (the ticket was
cancelled, or ticketing released it as stale, or another agent took it over
after it expired); the work function, which runs in the loop's thread,
learns it here. The tracked LLM client asks before every call, so a lost
ticket costs at most the call already under way.

Progress is counted the other way: every LLM answer and every git command
is a step, and each heartbeat reports the count, so ticketing can tell an
agent that heartbeats but does nothing (a hung tool, a wedged call) from
one that is working (its stale-lease check).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


class LeaseGone(Exception):
    """The ticket's lease is gone: stop working on it."""


@dataclass
class WorkState:
    lost: threading.Event = field(default_factory=threading.Event)
    steps: int = 0


_state: ContextVar[WorkState | None] = ContextVar("swarm_work_state", default=None)


@contextmanager
def working(state: WorkState) -> Iterator[WorkState]:
    """While the work runs: `state.lost` (set by the heartbeat) means stop,
    and `advanced()` counts its steps into `state.steps`."""
    token = _state.set(state)
    try:
        yield state
    finally:
        _state.reset(token)


def check() -> None:
    """LeaseGone when the heartbeat found the lease gone."""
    state = _state.get()
    if state is not None and state.lost.is_set():
        raise LeaseGone("the ticket's lease is gone (cancelled, released or taken over): stopping the work")


def advanced() -> None:
    """One more step of the work (outside a lease's work: nothing to count)."""
    state = _state.get()
    if state is not None:
        state.steps += 1
