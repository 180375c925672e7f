"""Agent template versions as a claim hands them out, for runtime tests."""

from __future__ import annotations

from typing import Any

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.default_templates import PROMPTS
from swarm_ticketing.domain import AgentRole


def template(stage: int, **fields: Any) -> pb.AgentTemplateVersion:
    """The platform's template for the stage (fields override)."""
    role = AgentRole(pb.AgentRole.Name(stage).removeprefix("AGENT_ROLE_").lower())
    values: dict[str, Any] = {
        "template_slug": f"swarm-{role.value}",
        "version": 1,
        "agent_type": role.value,
        "prompt": PROMPTS[role],
        "parameters_json": '{"max_tokens": 4096}',
        **fields,
    }
    return pb.AgentTemplateVersion(**values)
