"""The outbox events vmhost writes, in the transaction of the change they announce."""

from __future__ import annotations

from typing import Any

from swarm_vmhost.domain import Agent, EventType
from swarm_vmhost.tables import outbox
from swarmcommon.outbox import OutboxEvent, OutboxWriter

WRITER = OutboxWriter(outbox, source="vmhost")


def agent_event(kind: EventType, agent: Agent, **extra: Any) -> OutboxEvent:
    data = {
        "agent_id": agent.id,
        "template": agent.template,
        "role": agent.role,
        "driver": agent.driver,
        "address": agent.address,
        **extra,
    }
    return OutboxEvent(agent.tenant_id, kind, data)
