"""Merge requests follow the stages: opened by the author's branch, rejected
back to the author, reopened by the rework, merged by the reviewer; each step
an outbox event in the same transaction."""

from __future__ import annotations

import json

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, get, outbox_events, spec, submit, tenant

pytestmark = BACKENDS
CODER, REVIEWER = pb.AGENT_ROLE_CODER, pb.AGENT_ROLE_REVIEWER


def _mrs(h: TicketingHarness, t: str, **kw: object) -> list[pb.MergeRequest]:
    return list(h.stub.ListMergeRequests(pb.ListMergeRequestsRequest(tenant_id=t, **kw)).merge_requests)  # type: ignore[arg-type]


def test_open_reject_rework_merge(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a", stages=[CODER, REVIEWER])]).tickets[0]
    branch = f"swarm/{ticket.id[:8]}-a"

    coder = claim(ticketing.stub, t, "coder-1", role=CODER)
    submit(
        ticketing.stub,
        t,
        coder,
        json.dumps({"branch": branch, "commit": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"}),
    )
    (mr,) = _mrs(ticketing, t)
    assert (mr.state, mr.branch, mr.commit, mr.author_agent_id) == (
        pb.MERGE_REQUEST_STATE_OPEN,
        branch,
        "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
        "coder-1",
    )

    reviewer = claim(ticketing.stub, t, "reviewer-1", role=REVIEWER)
    ticketing.stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=t,
            ticket_id=ticket.id,
            claim_token=reviewer.lease.claim_token,
            reason="review rejected: needs tests",
            details_json=json.dumps({"review": "rejected", "branch": branch}),
        )
    )
    rejected = ticketing.stub.GetMergeRequest(pb.GetMergeRequestRequest(tenant_id=t, merge_request_id=mr.id))
    assert rejected.merge_request.state == pb.MERGE_REQUEST_STATE_REJECTED
    assert "needs tests" in rejected.merge_request.review_comments
    back = get(ticketing.stub, t, ticket.id)
    assert back.state == pb.TICKET_STATE_READY and back.stage_index == 0 and back.failure_count == 1

    rework = claim(ticketing.stub, t, "coder-2", role=CODER)
    assert rework.ticket.id == ticket.id
    submit(
        ticketing.stub,
        t,
        rework,
        json.dumps({"branch": branch, "commit": "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"}),
    )
    (mr,) = _mrs(ticketing, t)
    assert (
        mr.state == pb.MERGE_REQUEST_STATE_OPEN
        and mr.commit == "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2"
        and mr.author_agent_id == "coder-2"
    )

    reviewer = claim(ticketing.stub, t, "reviewer-1", role=REVIEWER)
    result = {
        "review": "approved",
        "branch": branch,
        "merge_commit": "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
        "comments": "ship it",
    }
    submit(ticketing.stub, t, reviewer, json.dumps(result))
    (mr,) = _mrs(ticketing, t, state=pb.MERGE_REQUEST_STATE_MERGED)
    assert (mr.merge_commit, mr.review_comments, mr.reviewer_agent_id) == ("a1" * 20, "ship it", "reviewer-1")
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_DONE

    prs = [(kind, data["branch"]) for kind, data in outbox_events(ticketing, t) if kind.startswith("pr.")]
    assert prs == [
        ("pr.opened", branch),
        ("pr.rejected", branch),
        ("pr.opened", branch),
        ("pr.merged", branch),
    ]


def test_no_branch_or_no_reviewer_means_no_merge_request(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a", stages=[CODER]), spec("b", stages=[CODER, REVIEWER])])
    submit(
        ticketing.stub,
        t,
        claim(ticketing.stub, t, "c", role=CODER),
        json.dumps({"branch": "x", "commit": "1111111111111111111111111111111111111111"}),
    )
    submit(ticketing.stub, t, claim(ticketing.stub, t, "c", role=CODER), json.dumps({"summary": "no branch"}))
    assert _mrs(ticketing, t) == []


def test_merge_requests_are_tenant_scoped_and_validated(ticketing: TicketingHarness) -> None:
    t, other = tenant(), tenant()
    project = create_project(ticketing.stub, t, [spec("a", stages=[CODER, REVIEWER])])
    submit(
        ticketing.stub,
        t,
        claim(ticketing.stub, t, "c", role=CODER),
        json.dumps({"branch": "b", "commit": "1111111111111111111111111111111111111111"}),
    )
    (mr,) = _mrs(ticketing, t, project_id=project.project.id)
    assert _mrs(ticketing, other) == []
    with raises_status(grpc.StatusCode.NOT_FOUND, mr.id):
        ticketing.stub.GetMergeRequest(pb.GetMergeRequestRequest(tenant_id=other, merge_request_id=mr.id))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "state"):
        _mrs(ticketing, t, state=9)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "project_id"):
        _mrs(ticketing, t, project_id="nope")
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "merge_request_id"):
        ticketing.stub.GetMergeRequest(pb.GetMergeRequestRequest(tenant_id=t, merge_request_id="x"))


def test_git_names_in_results_are_checked_before_anything_is_written(ticketing: TicketingHarness) -> None:
    """A result's branch reaches the reviewer's `git fetch`: one that is a git
    option (`--upload-pack=<cmd>` runs <cmd>) or a commit that is not a commit
    id is refused, and the ticket keeps its lease."""
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a", stages=[CODER, REVIEWER])]).tickets[0]
    coder = claim(ticketing.stub, t, "coder-1", role=CODER)
    for result, field in (
        ({"branch": "--upload-pack=touch /tmp/pwned", "commit": "c1" * 20}, "result_json.branch"),
        ({"branch": "swarm/../../x", "commit": "c1" * 20}, "result_json.branch"),
        ({"branch": "swarm/a", "commit": "HEAD; rm -rf /"}, "result_json.commit"),
        ({"branch": ["swarm/a"]}, "result_json.branch"),
    ):
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT, field):
            submit(ticketing.stub, t, coder, json.dumps(result))
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_ASSIGNED
    assert _mrs(ticketing, t) == []
    submit(ticketing.stub, t, coder, json.dumps({"branch": "swarm/a", "commit": "c1" * 20}))
    assert [mr.branch for mr in _mrs(ticketing, t)] == ["swarm/a"]
