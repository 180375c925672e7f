"""An agents row as the domain's Agent (its guest handle stored as JSON)."""

from __future__ import annotations

import json
from typing import Any

from swarm_vmhost.domain import Agent, AgentRole, AgentState, DriverName, GuestHandle, GuestLimit


def handle_from_json(raw: str | None) -> GuestHandle | None:
    if not raw:
        return None
    fields = json.loads(raw)
    fields["unenforced_limits"] = [GuestLimit(x) for x in fields.get("unenforced_limits", [])]
    return GuestHandle(**fields)


def agent_from_row(row: Any) -> Agent:
    m = row._mapping
    return Agent(
        id=m["id"],
        tenant_id=m["tenant_id"],
        template=m["template"],
        role=AgentRole(m["role"]),
        driver=DriverName(m["driver"]),
        state=AgentState(m["state"]),
        address=m["address"],
        reservation_id=m["reservation_id"],
        ticket_id=m["ticket_id"],
        ticket_since=m["ticket_since"],
        state_reason=m["state_reason"],
        replaces_agent_id=m["replaces_agent_id"],
        handle=handle_from_json(m["handle"]),
        last_heartbeat_at=m["last_heartbeat_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        terminated_at=m["terminated_at"],
        reservation_settled_at=m["reservation_settled_at"],
    )
