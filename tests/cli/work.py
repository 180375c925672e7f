"""Work for the agent processes these tests start (`--work tests.cli.work:finish`)."""

from __future__ import annotations

from typing import Any

from swarmagent.client import ClaimedTicket

POISON = "poison"


def finish(claimed: ClaimedTicket) -> dict[str, Any]:
    """Every stage succeeds, except on a ticket whose name says poison."""
    if POISON in claimed.ticket.name:
        raise RuntimeError(f"cannot make sense of {claimed.ticket.name!r}")
    return {"branch": f"swarm/{claimed.id[:8]}", "stage": claimed.stage_name}
