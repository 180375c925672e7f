"""The agents: vmhost guests spawned with the best driver this machine has,
watched until the project is worked, and the operator's redrive of what
they dead-lettered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from swarm.vmhost.v1 import vmhost_pb2 as vpb
from swarmcommon.clients import VmHostClient
from swarmcommon.tls import ClientTls
from swarmdemo.console import console, poll
from swarmdemo.model import BROKEN

TEMPLATE = "webapp-agent"
ROLES = [vpb.AGENT_ROLE_CODER] * 3 + [vpb.AGENT_ROLE_REVIEWER, vpb.AGENT_ROLE_JUDGE]
WORK_TIMEOUT_SECONDS = 600
STATE_COLOURS = {"done": "green", "quarantined": "red", "in_progress": "cyan"}


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _show_drivers(vmhost: VmHostClient) -> None:
    drivers = vmhost.stub.ListDrivers(vpb.ListDriversRequest()).drivers
    console.print(
        "vmhost drivers: "
        + ", ".join(
            f"{_name(vpb.Driver, d.driver, 'DRIVER_')} ({_name(vpb.Isolation, d.isolation, 'ISOLATION_')})"
            f"{' (default)' if d.is_default else ''}{'' if d.available else ' — ' + d.reason}"
            for d in drivers
        ),
        highlight=False,
    )
    chosen = next((d for d in drivers if d.is_default), None)
    if chosen is not None:
        # Isolation values grow with strength; qemu (a VM) is not offered for agents' work here.
        strongest = max(
            (d.isolation for d in drivers if d.available and d.driver != vpb.DRIVER_QEMU), default=0
        )
        why = "the strongest this machine allows" if chosen.isolation >= strongest else "as configured"
        console.print(
            f"agents run in the {_name(vpb.Driver, chosen.driver, 'DRIVER_')} driver "
            f"({_name(vpb.Isolation, chosen.isolation, 'ISOLATION_').replace('_', ' ')} isolation), {why}",
            highlight=False,
        )


def _spawn(vmhost: VmHostClient, tenant: str) -> list[vpb.Agent]:
    agents = [
        vmhost.stub.SpawnAgent(
            vpb.SpawnAgentRequest(tenant_id=tenant, template=TEMPLATE, role=role, request_id=f"demo-{i}")
        ).agent
        for i, role in enumerate(ROLES)
    ]
    for a in agents:
        console.print(
            f"  spawned {_name(vpb.AgentRole, a.role, 'AGENT_ROLE_'):<8} agent {a.id[:8]} "
            f"({_name(vpb.Driver, a.driver, 'DRIVER_')}) at {a.address}",
            highlight=False,
        )
    return agents


class Progress:
    """Prints each ticket's state and stage when it changes."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.seen: dict[str, tuple[str, int]] = {}

    def show(self, tickets: list[dict[str, Any]]) -> None:
        for t in tickets:
            if t["id"] not in self.names:
                continue  # the canary's batch: its deployment's counters tell its story
            now = (t["state"], t["stage_index"])
            if self.seen.get(t["id"]) == now:
                continue
            self.seen[t["id"]] = now
            stage = t["stages"][min(t["stage_index"], len(t["stages"]) - 1)]
            colour = STATE_COLOURS.get(t["state"], "white")
            who = f" by {t['lease']['agent_id'][:8]}" if t.get("lease") else ""
            console.print(f"  [{colour}]{t['state']:<11}[/] {self.names[t['id']]:<32} {stage}{who}")


def run_agents(
    vmhost_target: str,
    operator: ClientTls,
    tenant: str,
    api: httpx.Client,
    names: dict[str, str],
    watch: Callable[[], None] = lambda: None,
) -> None:
    """Spawn agents (as the operator), show the tickets' progress until none
    is left to do (redriving the dead letters once, as an operator would),
    then stop them."""
    with VmHostClient(vmhost_target, tls=operator) as vmhost:
        _show_drivers(vmhost)
        agents = _spawn(vmhost, tenant)
        progress = Progress(names)
        redriven = False

        def finished() -> bool:
            nonlocal redriven
            tickets = api.get("/api/tickets", params={"page_size": 1000}).json()["items"]
            progress.show(tickets)
            watch()
            # Cancelled: an ensemble's attempts its judge no longer needed.
            states = {t["state"] for t in tickets} - {"cancelled"}
            # Nothing left to claim or work: only dead letters and what waits on them.
            if states <= {"done", "quarantined", "blocked"} and "quarantined" in states and not redriven:
                redriven = redrive_dead_letters(api)
            return states <= {"done"}

        try:
            if not poll(finished, timeout=WORK_TIMEOUT_SECONDS, interval=0.3):
                console.print(f"[red]demo did not finish within {WORK_TIMEOUT_SECONDS} s")
            live = vmhost.stub.ListAgents(vpb.ListAgentsRequest(tenant_id=tenant)).agents
            console.print(f"[bold]ListAgents:[/] {len(live)} agents alive; terminating them")
        finally:
            for a in agents:
                vmhost.stub.TerminateAgent(
                    vpb.TerminateAgentRequest(tenant_id=tenant, agent_id=a.id, reason="demo finished")
                )


def redrive_dead_letters(api: httpx.Client) -> bool:
    """What an operator does: read why tickets were dead-lettered, fix the
    cause (here: the broken line in the poison ticket's spec, edited over
    REST), redrive them."""
    dlq = api.get("/api/dead-letters").json()["items"]
    console.print(f"[bold]GET /api/dead-letters: {len(dlq)} quarantined")
    for t in dlq:
        console.print(f"  {t['name']}: {t['quarantine_reason']}")
        if BROKEN in t["description"]:
            fix = {
                "description": t["description"].replace(BROKEN, "NOT NULL;"),
                "reason": "spec fixed (line 12)",
            }
            r = api.patch(f"/api/tickets/{t['id']}", json=fix)
            r.raise_for_status()
            console.print(f"[bold]PATCH /api/tickets/{t['id'][:8]}… → {r.status_code}:[/] NOT NUL → NOT NULL")
    r = api.post(
        "/api/dead-letters/redrive",
        json={"ticket_ids": [t["id"] for t in dlq], "reason": "spec fixed (line 12)"},
    )
    r.raise_for_status()
    console.print(f"[bold]POST /api/dead-letters/redrive → {r.status_code}:[/] {len(dlq)} redriven")
    return True
