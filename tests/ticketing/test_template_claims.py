"""Template versions through real claims (both backends): every claim says
which version its stage runs with, a canary takes its share and keeps it,
stage outcomes move the canary's counters (lost leases do not), a review
rejection counts against the author's version, and an automatic rollback
sends every later claim to the stable version."""

from __future__ import annotations

import json
from datetime import timedelta

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.templates import PLATFORM, DeploymentStatus
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, fail, get, spec, submit, tenant

pytestmark = BACKENDS
CODER, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER


def _canary(h: TicketingHarness, t: str, percent: int, ladder: list[int]) -> str:
    """The tenant's own coder: v1 for everyone, then v2 to `percent` of tickets."""
    templates, deployments = h.app.stores.templates, h.app.stores.deployments
    templates.create_template(t, f"{t}-coder", "coder", "ACME coder", "")
    for n in (1, 2):
        templates.add_version(t, f"{t}-coder", f"You are coder v{n}.", "", {}, {}, "alice")
    deployments.deploy(t, "alice", f"{t}-coder", 1, 100)
    return deployments.deploy(t, "alice", f"{t}-coder", 2, percent, ladder=ladder).id


def test_a_claim_carries_its_stages_template_and_a_replay_the_same(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a", stages=[CODER, REVIEWER])])
    first = claim(ticketing.stub, t, "agent-1", request_id="r-1")
    tpl = first.template
    assert (tpl.template_slug, tpl.version, tpl.agent_type) == ("swarm-coder", 1, "coder")
    assert tpl.prompt.startswith("You are a software engineer") and json.loads(tpl.parameters_json)
    again = claim(ticketing.stub, t, "agent-1", request_id="r-1")
    assert again.template == tpl
    submit(ticketing.stub, t, first, json.dumps({"branch": "swarm/a", "commit": "c" * 40}))
    review = claim(ticketing.stub, t, "agent-2")
    assert (review.template.template_slug, review.template.agent_type) == ("swarm-reviewer", "reviewer")


def test_a_canary_gets_its_share_and_a_rollback_sends_everyone_back(ticketing: TicketingHarness) -> None:
    t = tenant()
    deployment = _canary(ticketing, t, 50, [50, 100])
    create_project(ticketing.stub, t, [spec(str(i)) for i in range(40)])
    expected = {
        i: ticketing.app.stores.templates.resolve(t, "coder", i).version.version
        for i in (
            x.id
            for x in ticketing.stub.ListTickets(pb.ListTicketsRequest(tenant_id=t, page_size=100)).tickets
        )
    }
    assert 8 <= sum(v == 2 for v in expected.values()) <= 32
    canary_claims = []
    for n in range(40):
        c = claim(ticketing.stub, t, f"agent-{n}")
        assert c.template.version == expected[c.ticket.id], "the claim says what resolution says"
        assert c.template.canary == (c.template.version == 2)
        if c.template.version == 2:
            canary_claims.append(c)
        else:
            submit(ticketing.stub, t, c)
    assert len(canary_claims) >= 10
    for c in canary_claims[:9]:
        fail(ticketing.stub, t, c, "the prompt made a mess")
    assert ticketing.app.stores.deployments.deployment(t, deployment).status is DeploymentStatus.CANARY
    fail(ticketing.stub, t, canary_claims[9], "the prompt made a mess")  # the 10th failure
    rolled = ticketing.app.stores.deployments.deployment(t, deployment)
    assert rolled.status is DeploymentStatus.ROLLBACK and rolled.failure_count == 10
    # Every retry now runs the stable version, including the canary's own tickets.
    retry = claim(ticketing.stub, t, "agent-retry")
    assert retry.ticket.id in {c.ticket.id for c in canary_claims[:10]}
    assert (retry.template.version, retry.template.canary) == (1, False)


def test_a_lost_lease_is_not_the_templates_fault(ticketing: TicketingHarness) -> None:
    t = tenant()
    deployment = _canary(ticketing, t, 100 - 1, [99, 100])
    create_project(ticketing.stub, t, [spec(str(i)) for i in range(5)])
    for n in range(5):
        claim(ticketing.stub, t, f"agent-{n}")
    ticketing.clock.advance(timedelta(minutes=16))
    ticketing.app.reaper.run_once()
    counted = ticketing.app.stores.deployments.deployment(t, deployment)
    assert (counted.success_count, counted.failure_count) == (0, 0)


def test_a_rejected_review_counts_against_the_authors_version(ticketing: TicketingHarness) -> None:
    t = tenant()
    deployment = _canary(ticketing, t, 99, [99, 100])
    created = create_project(ticketing.stub, t, [spec(str(i), stages=[CODER, REVIEWER]) for i in range(6)])
    coders = [claim(ticketing.stub, t, f"coder-{n}", role=CODER) for n in range(6)]
    author = next(c for c in coders if c.template.canary)
    for c in coders:
        submit(ticketing.stub, t, c, json.dumps({"branch": f"swarm/{c.ticket.id[:8]}", "commit": "c" * 40}))
    after_submit = ticketing.app.stores.deployments.deployment(t, deployment)
    reviews = [claim(ticketing.stub, t, f"reviewer-{n}", role=REVIEWER) for n in range(6)]
    review = next(r for r in reviews if r.ticket.id == author.ticket.id)
    ticketing.stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=t,
            ticket_id=review.ticket.id,
            claim_token=review.lease.claim_token,
            reason="review rejected: no tests",
            details_json=json.dumps({"review": "rejected", "branch": f"swarm/{review.ticket.id[:8]}"}),
        )
    )
    after = ticketing.app.stores.deployments.deployment(t, deployment)
    assert after.success_count == after_submit.success_count
    assert after.failure_count == after_submit.failure_count + 1
    assert len(created.tickets) == 6


def test_nothing_deployed_for_the_stage_refuses_the_claim_and_keeps_the_ticket(
    ticketing: TicketingHarness,
) -> None:
    t = tenant()
    (ticket,) = create_project(ticketing.stub, t, [spec("a")]).tickets
    deployments = ticketing.app.stores.deployments
    with ticketing.app.db.engine.connect() as conn:
        from swarm_ticketing.stores.templates import latest_deployment

        current = latest_deployment(conn, PLATFORM, "coder")
    assert current is not None
    deployments.pause(None, current.id, "ops")
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "no agent template is deployed for type 'coder'"):
        claim(ticketing.stub, t, "agent-1")
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_READY
