"""Healing a failed agent, the same way whatever found it (silence, a dead
guest, a hung ticket, the guest's own report): fail it, terminate it, give
its leases back through ticketing, and spawn a replacement in its place.

Every step is a HealingAction in the healing log (and an `agent.healed`
event); the steps for one agent share an incident id. The pool the tenant
spawned is the target: a replacement is spawned unless quota refuses it
(recorded as SKIPPED).
"""

from __future__ import annotations

import uuid
from typing import Any

from swarm_vmhost.domain import (
    GUEST_REPORTED_FAILURE,
    Agent,
    HealingAction,
    HealingActionType,
    HealingOutcome,
    HealingStep,
    HealthCheck,
    SpawnRequest,
)
from swarm_vmhost.host import VmHost
from swarm_vmhost.stores import HealingLog
from swarmcommon import metrics
from swarmcommon.errors import QuotaExceeded, SwarmError

Act = HealingActionType
Outcome = HealingOutcome


class Healer:
    def __init__(self, host: VmHost, log: HealingLog) -> None:
        self.host = host
        self.log = log

    def record(self, step: HealingStep) -> HealingAction:
        action = self.log.record(step)
        metrics.healed(step.check, step.action, step.outcome)
        return action

    def guest_failed(self, tenant_id: str, agent_id: str) -> Agent:
        """The guest says it cannot go on (a FAILED heartbeat): heal it now."""
        agent = self.host.agents.get(tenant_id, agent_id)
        self.heal_agent(agent, HealthCheck.VM_HEARTBEAT, GUEST_REPORTED_FAILURE)
        return self.host.agents.get(tenant_id, agent_id)

    def heal_agent(self, agent: Agent, check: HealthCheck, reason: str) -> bool:
        """Fail, terminate and replace `agent`; False when it was no longer live
        (someone else is dealing with it)."""
        failed = self.host.agents.fail(agent.id, reason)
        if failed is None:
            return False
        incident = str(uuid.uuid4())
        about: dict[str, Any] = {
            "tenant_id": agent.tenant_id,
            "agent_id": agent.id,
            "target": f"agents/{agent.id}",
        }

        def step(action: Act, outcome: Outcome, **details: Any) -> None:
            self.record(HealingStep(incident, check, action, outcome, **about, **details))

        try:
            done = self.host.terminate(failed, reason)
        except SwarmError as exc:
            step(Act.TERMINATE_AGENT, Outcome.FAILED, detail=reason, error=exc.message)
            return True
        step(Act.TERMINATE_AGENT, Outcome.SUCCEEDED, detail=reason)
        step(
            Act.RELEASE_TICKETS,
            Outcome.FAILED if done.release_error else Outcome.SUCCEEDED,
            detail=f"{len(done.released_ticket_ids)} lease(s) returned",
            error=done.release_error,
            ticket_ids=tuple(done.released_ticket_ids),
        )
        request = SpawnRequest(
            failed.tenant_id, failed.template, failed.role, failed.driver, f"replace:{failed.id}"
        )
        try:
            replacement = self.host.spawn(request, replaces=failed.id)
        except QuotaExceeded as exc:
            step(Act.SPAWN_REPLACEMENT, Outcome.SKIPPED, detail=exc.message)
        except SwarmError as exc:
            step(Act.SPAWN_REPLACEMENT, Outcome.FAILED, error=exc.message)
        else:
            step(
                Act.SPAWN_REPLACEMENT,
                Outcome.SUCCEEDED,
                detail=f"replaced by {replacement.id}",
                replacement_agent_id=replacement.id,
            )
        return True
