"""What a completion announces beyond itself (both backends): the merged pull
request on `ticket.completed`, and `project.design_complete` once the
project's last design ticket is done."""

from __future__ import annotations

import json

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.ticketing import claim, create_project, outbox_events, spec, submit, tenant

pytestmark = BACKENDS
CODER, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER


def test_ticket_completed_links_its_merged_pull_request(ticketing: TicketingHarness) -> None:
    t = tenant()
    reviewed, plain = create_project(
        ticketing.stub, t, [spec("r", stages=[CODER, REVIEWER], priority=1), spec("p")]
    ).tickets
    submit(
        ticketing.stub,
        t,
        claim(ticketing.stub, t, "coder-1"),
        json.dumps({"branch": "swarm/r", "commit": "c" * 40}),
    )
    merge = json.dumps({"branch": "swarm/r", "merge_commit": "d" * 40})
    submit(ticketing.stub, t, claim(ticketing.stub, t, "reviewer-1", role=REVIEWER), merge)
    submit(ticketing.stub, t, claim(ticketing.stub, t, "coder-2"))
    completed = {d["ticket_id"]: d for kind, d in outbox_events(ticketing, t) if kind == "ticket.completed"}
    (mr,) = ticketing.stub.ListMergeRequests(pb.ListMergeRequestsRequest(tenant_id=t)).merge_requests
    assert completed[reviewed.id]["pull_request"] == {
        "merge_request_id": mr.id,
        "branch": "swarm/r",
        "commit": "c" * 40,
        "merge_commit": "d" * 40,
    }
    assert "pull_request" not in completed[plain.id]


def test_the_last_design_ticket_announces_design_complete(ticketing: TicketingHarness) -> None:
    t = tenant()
    design = [pb.TicketSpec(key=k, name=k, type=pb.TICKET_TYPE_DESIGN, priority=5) for k in ("api", "schema")]
    made = create_project(ticketing.stub, t, [*design, spec("build", depends_on=["api", "schema"])])
    api, schema, _ = made.tickets

    def announced() -> list[dict[str, object]]:
        return [d for kind, d in outbox_events(ticketing, t) if kind == "project.design_complete"]

    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-1"))
    assert announced() == [], "one design ticket is still open"
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-2"))
    assert announced() == [{"project_id": made.project.id, "design_ticket_ids": [api.id, schema.id]}]
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-3"))  # the feature: nothing more
    assert len(announced()) == 1
