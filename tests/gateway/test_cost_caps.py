"""LLM cost caps through the REST API: set on a project (its tickets'
default) or a ticket, shown on both, raised by the tenant's operator, and
the tenant default as a quota override."""

from __future__ import annotations

import uuid

from swarm.ticketing.v1 import ticketing_pb2 as tpb
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS


def test_caps_are_set_shown_raised_and_a_budget_hold_is_redriven(mesh: Mesh) -> None:
    tid = f"caps-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(tid, cost_usd_per_ticket=1_000_000)
    tenant = mesh.admin("GET", f"/admin/tenants/{tid}").json()
    assert tenant["overrides"]["cost_usd_per_ticket"] == tenant["limits"]["cost_usd_per_ticket"] == 1_000_000
    with mesh.as_key(key) as client:
        created = client.post(
            "/api/projects",
            json={
                "name": "capped",
                "ticket_cost_cap_usd_micros": 2_000_000,
                "tickets": [
                    {"key": "a", "name": "A", "cost_cap_usd_micros": 500_000},
                    {"key": "b", "name": "B"},
                ],
            },
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["project"]["ticket_cost_cap_usd_micros"] == 2_000_000
        assert [t["cost_cap_usd_micros"] for t in body["tickets"]] == [500_000, None]
        assert all(t["quarantine_cause"] is None for t in body["tickets"])
        ticket = body["tickets"][0]["id"]

        missing = client.put(f"/api/tickets/{ticket}/cost-cap", json={"cost_usd_micros": 1})
        assert missing.status_code == 422
        too_low = client.put(f"/api/tickets/{ticket}/cost-cap", json={"cost_cap_usd_micros": -1})
        assert too_low.status_code == 422

        # The LLM proxy (telemetry) holds the ticket for its budget.
        claimed = mesh.ticketing.ClaimTicket(tpb.ClaimTicketRequest(tenant_id=tid, agent_id="agent-1"))
        assert claimed.ticket.id == ticket
        mesh.ticketing.ReleaseForBudget(
            tpb.ReleaseForBudgetRequest(
                tenant_id=tid,
                ticket_id=ticket,
                agent_id="agent-1",
                spent_usd_micros=500_000,
                cost_cap_usd_micros=500_000,
            )
        )
        dead = client.get("/api/dead-letters").json()["items"]
        assert [(d["id"], d["quarantine_cause"], d["failure_count"]) for d in dead] == [
            (ticket, "budget_exceeded", 0)
        ]

        raised = client.put(
            f"/api/tickets/{ticket}/cost-cap", json={"cost_cap_usd_micros": 3_000_000, "reason": "worth it"}
        )
        assert raised.status_code == 200, raised.text
        assert raised.json()["cost_cap_usd_micros"] == 3_000_000
        redriven = client.post("/api/dead-letters/redrive", json={"ticket_ids": [ticket]}).json()["tickets"][
            0
        ]
        assert redriven["state"] == "ready" and redriven["quarantine_cause"] is None
        events = client.get(f"/api/tickets/{ticket}/events").json()["items"]
        change = next(e for e in events if e["event_type"] == "cost_cap_changed")
        assert change["new_value"] == {"cost_cap_usd_micros": 3_000_000} and change["rationale"] == "worth it"

        cleared = client.put(f"/api/tickets/{ticket}/cost-cap", json={"cost_cap_usd_micros": None})
        assert cleared.status_code == 200 and cleared.json()["cost_cap_usd_micros"] is None
        assert (
            client.put(f"/api/tickets/{uuid.uuid4()}/cost-cap", json={"cost_cap_usd_micros": 1}).status_code
            == 404
        )
        usage = [u["resource"] for u in client.get("/api/quota/usage").json()["resources"]]
        assert "cost_usd_per_ticket" not in usage  # a limit, not a counter
