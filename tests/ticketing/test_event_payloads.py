"""Every event ticketing writes matches the payload schema the event catalogue
publishes (`GET /api/event-types`): a lifecycle that fires most of ticketing's
event types, on both backends and both claim paths, checked row by row."""

from __future__ import annotations

import json

import jsonschema
import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmcommon.event_catalogue import CATALOGUE
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.ticketing import claim, create_project, fail, outbox_events, spec, submit, tenant

CODER, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER


def _work_everything(h: TicketingHarness, t: str) -> None:
    design = pb.TicketSpec(key="design", name="design", type=pb.TICKET_TYPE_DESIGN, priority=9)
    made = create_project(
        h.stub,
        t,
        [
            design,
            spec("merged", priority=8, stages=[CODER, REVIEWER]),
            spec("flaky", priority=7),
            spec("dropped", priority=6, stages=[CODER, REVIEWER]),
        ],
    )
    ids = {tk.name.removeprefix("ticket "): tk.id for tk in made.tickets}
    submit(h.stub, t, claim(h.stub, t, "designer", role=CODER))  # project.design_complete

    coder = claim(h.stub, t, "coder-1", role=CODER)
    assert coder.ticket.id == ids["merged"]
    h.stub.StartWork(
        pb.StartWorkRequest(tenant_id=t, ticket_id=coder.ticket.id, claim_token=coder.lease.claim_token)
    )
    submit(h.stub, t, coder, json.dumps({"branch": "swarm/merged", "commit": "c" * 40}))
    rejecting = claim(h.stub, t, "reviewer-1", role=REVIEWER)
    h.stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=t,
            ticket_id=rejecting.ticket.id,
            claim_token=rejecting.lease.claim_token,
            reason="review rejected: needs tests",
            details_json=json.dumps({"review": "rejected", "branch": "swarm/merged"}),
        )
    )
    rework = claim(h.stub, t, "coder-2", role=CODER)
    submit(h.stub, t, rework, json.dumps({"branch": "swarm/merged", "commit": "d" * 40}))
    merging = claim(h.stub, t, "reviewer-1", role=REVIEWER)
    submit(h.stub, t, merging, json.dumps({"branch": "swarm/merged", "merge_commit": "e" * 40}))

    for i in range(3):  # ticket.failed x3, then ticket.quarantined
        fail(h.stub, t, claim(h.stub, t, f"flaky-{i}", role=CODER), "flaky")

    dropped = claim(h.stub, t, "coder-3", role=CODER)
    assert dropped.ticket.id == ids["dropped"]
    submit(h.stub, t, dropped, json.dumps({"branch": "swarm/dropped", "commit": "f" * 40}))
    h.stub.CancelTicket(
        pb.CancelTicketRequest(
            tenant_id=t, ticket_id=ids["dropped"], operator="ops@acme", reason="not needed"
        )
    )


@BACKENDS
def test_every_event_matches_its_published_schema(ticketing: TicketingHarness) -> None:
    t = tenant()
    _work_everything(ticketing, t)
    events = outbox_events(ticketing, t)
    seen = {kind for kind, _ in events}
    assert seen >= {
        "ticket.created",
        "ticket.assigned",
        "ticket.in_progress",
        "ticket.completed",
        "ticket.failed",
        "ticket.quarantined",
        "ticket.cancelled",
        "pr.opened",
        "pr.rejected",
        "pr.merged",
        "pr.closed",
        "project.design_complete",
        "collaboration.stage_complete",
    }, seen
    for kind, data in events:
        assert kind in CATALOGUE, f"{kind} is emitted but not in the catalogue"
        jsonschema.validate(data, CATALOGUE[kind].payload_schema)
    (completed,) = [d for k, d in events if k == "ticket.completed" and d.get("pull_request")]
    assert completed["pull_request"]["merge_commit"] == "e" * 40


def test_a_payload_missing_a_field_integrations_key_on_is_refused() -> None:
    """The schemas are not vacuous: a ticket event without its ticket id fails."""
    schema = CATALOGUE["ticket.completed"].payload_schema
    good = {
        "ticket_id": "t",
        "project_id": "p",
        "title": "x",
        "state": "done",
        "stage": "coder",
        "failure_count": 0,
    }
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError, match="ticket_id"):
        jsonschema.validate({k: v for k, v in good.items() if k != "ticket_id"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "pull_request": {"branch": "b"}}, schema)
