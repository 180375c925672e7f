"""Work for the agent processes these tests start (`--work tests.dashboard.work:steady`)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from swarmagent.client import ClaimedTicket

tracer = trace.get_tracer("tests.dashboard")

# A description holding this fails every attempt, so the ticket is dead-lettered.
POISON = "BROKEN-LINE"


def steady(claimed: ClaimedTicket) -> dict[str, Any]:
    """A stage of the seed's traced steps; a poisoned spec fails."""
    for step in ("git.clone", "llm.generate_code", "git.push"):
        with tracer.start_as_current_span(step):
            if POISON in claimed.ticket.description and step == "llm.generate_code":
                raise RuntimeError("the model answered nonsense to the broken line")
    return {"branch": f"swarm/{claimed.id[:8]}"}
