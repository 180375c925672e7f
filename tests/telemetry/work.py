"""Work functions for agent processes started by tests."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from swarmagent.client import ClaimedTicket

tracer = trace.get_tracer("tests.work")


def traced_steps(claimed: ClaimedTicket) -> dict[str, Any]:
    """A stage made of the seed's steps, each a span under the agent's work span."""
    for step in ("git.clone", "llm.generate_code", "git.push"):
        with tracer.start_as_current_span(step):
            pass
    return {"branch": f"swarm/{claimed.id[:8]}"}
