"""Every bad input gets the right status code, names the problem, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import error_info
from tests.support.ticketing import claim, create_project, snapshot, spec

pytestmark = BACKENDS

UNKNOWN = "00000000-0000-4000-8000-000000000000"
TENANT = "tenant-a"
OTHER = "tenant-b"

Ctx = dict[str, Any]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _create(**kw: Any) -> Callable[[Ctx], Any]:
    def call(c: Ctx) -> Any:
        base: dict[str, Any] = {"tenant_id": TENANT, "name": "p", "tickets": [spec("a")]}
        base.update(kw)
        return c["stub"].CreateProject(pb.CreateProjectRequest(**base))

    return call


def _lease_call(method: str, request: type, **kw: Any) -> Callable[[Ctx], Any]:
    def call(c: Ctx) -> Any:
        base: dict[str, Any] = {
            "tenant_id": TENANT,
            "ticket_id": c["claim"].ticket.id,
            "claim_token": c["claim"].lease.claim_token,
        }
        base.update({k: (v(c) if callable(v) else v) for k, v in kw.items()})
        return getattr(c["stub"], method)(request(**base))

    return call


CASES = [
    # (call, expected code, fragment of the message naming the problem)
    pytest.param(_create(tenant_id=""), INVALID, "tenant_id", id="create-empty-tenant"),
    pytest.param(_create(tenant_id="bad tenant!"), INVALID, "tenant_id", id="create-malformed-tenant"),
    pytest.param(_create(tenant_id="t" * 129), INVALID, "tenant_id", id="create-oversized-tenant"),
    pytest.param(_create(name=""), INVALID, "name", id="create-empty-name"),
    pytest.param(_create(name="n" * 201), INVALID, "name", id="create-oversized-name"),
    pytest.param(
        _create(description="d" * 20_001), INVALID, "description", id="create-oversized-description"
    ),
    pytest.param(_create(tickets=[]), INVALID, "tickets", id="create-no-tickets"),
    pytest.param(
        _create(tickets=[pb.TicketSpec(key="a", name="")]),
        INVALID,
        "tickets[0].name",
        id="create-empty-ticket-name",
    ),
    pytest.param(
        _create(tickets=[pb.TicketSpec(key="a", name="x", type=99)]),
        INVALID,
        "tickets[0].type",
        id="create-bad-type",
    ),
    pytest.param(
        _create(tickets=[pb.TicketSpec(key="a", name="x", stages=[42])]),
        INVALID,
        "tickets[0].stages[0]",
        id="create-bad-stage-enum",
    ),
    pytest.param(
        _create(tickets=[pb.TicketSpec(key="a", name="x", priority=10**6)]),
        INVALID,
        "tickets[0].priority",
        id="create-priority-out-of-range",
    ),
    pytest.param(
        _create(tickets=[spec("a"), spec("a")]), INVALID, "duplicate key", id="create-duplicate-keys"
    ),
    pytest.param(
        _create(tickets=[spec("a", depends_on=["ghost"])]), INVALID, "ghost", id="create-unknown-dependency"
    ),
    pytest.param(
        _create(tickets=[spec("a", depends_on=["a"])]), INVALID, "itself", id="create-self-dependency"
    ),
    pytest.param(
        _create(tickets=[spec("a"), spec("b", depends_on=["a", "a"])]),
        INVALID,
        "tickets[1].depends_on[1]",
        id="create-duplicate-dependency",
    ),
    pytest.param(_create(request_id="has space"), INVALID, "request_id", id="create-bad-request-id"),
    pytest.param(
        lambda c: c["stub"].GetTicket(pb.GetTicketRequest(tenant_id=TENANT, ticket_id="")),
        INVALID,
        "ticket_id",
        id="get-empty-id",
    ),
    pytest.param(
        lambda c: c["stub"].GetTicket(pb.GetTicketRequest(tenant_id=TENANT, ticket_id="not-a-uuid")),
        INVALID,
        "ticket_id",
        id="get-malformed-id",
    ),
    pytest.param(
        lambda c: c["stub"].GetTicket(pb.GetTicketRequest(tenant_id=TENANT, ticket_id=UNKNOWN)),
        NOT_FOUND,
        UNKNOWN,
        id="get-unknown-id",
    ),
    pytest.param(
        lambda c: c["stub"].GetTicket(pb.GetTicketRequest(tenant_id=OTHER, ticket_id=c["claim"].ticket.id)),
        NOT_FOUND,
        "not found",
        id="get-other-tenants-ticket",
    ),
    pytest.param(
        lambda c: c["stub"].GetProject(pb.GetProjectRequest(tenant_id=TENANT, project_id=UNKNOWN)),
        NOT_FOUND,
        "project",
        id="get-unknown-project",
    ),
    pytest.param(
        lambda c: c["stub"].ListTickets(pb.ListTicketsRequest(tenant_id=TENANT, page_size=-1)),
        INVALID,
        "page_size",
        id="list-negative-page-size",
    ),
    pytest.param(
        lambda c: c["stub"].ListTickets(pb.ListTicketsRequest(tenant_id=TENANT, page_token="garbage!")),
        INVALID,
        "page_token",
        id="list-garbage-page-token",
    ),
    pytest.param(
        lambda c: c["stub"].ListTickets(pb.ListTicketsRequest(tenant_id=TENANT, state=77)),
        INVALID,
        "state",
        id="list-bad-state-enum",
    ),
    pytest.param(
        lambda c: c["stub"].ListProjects(pb.ListProjectsRequest(tenant_id=TENANT, page_size=-5)),
        INVALID,
        "page_size",
        id="list-projects-negative-page-size",
    ),
    pytest.param(
        lambda c: c["stub"].ListDeadLetters(pb.ListDeadLettersRequest(tenant_id="")),
        INVALID,
        "tenant_id",
        id="dlq-empty-tenant",
    ),
    pytest.param(
        lambda c: c["stub"].ClaimTicket(pb.ClaimTicketRequest(tenant_id=TENANT, agent_id="")),
        INVALID,
        "agent_id",
        id="claim-empty-agent",
    ),
    pytest.param(
        lambda c: c["stub"].ClaimTicket(pb.ClaimTicketRequest(tenant_id=TENANT, agent_id="a", role=99)),
        INVALID,
        "role",
        id="claim-bad-role-enum",
    ),
    pytest.param(
        lambda c: c["stub"].ClaimTicket(
            pb.ClaimTicketRequest(tenant_id=TENANT, agent_id="a", lease_duration=Duration(seconds=-5))
        ),
        INVALID,
        "lease_duration",
        id="claim-negative-lease",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, claim_token=""),
        INVALID,
        "claim_token",
        id="submit-empty-token",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, claim_token=UNKNOWN),
        PRECONDITION,
        "claimed by another agent",
        id="submit-wrong-token",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, result_json="[1, 2]"),
        INVALID,
        "result_json",
        id="submit-result-not-object",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, result_json="{not json"),
        INVALID,
        "result_json",
        id="submit-result-invalid-json",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, result_json='{"x": "' + "y" * 70_000 + '"}'),
        INVALID,
        "result_json",
        id="submit-result-oversized",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, tenant_id=OTHER),
        NOT_FOUND,
        "not found",
        id="submit-other-tenant",
    ),
    pytest.param(
        _lease_call("SubmitWork", pb.SubmitWorkRequest, ticket_id=UNKNOWN),
        NOT_FOUND,
        UNKNOWN,
        id="submit-unknown-ticket",
    ),
    pytest.param(
        _lease_call("ReportFailure", pb.ReportFailureRequest, reason=""),
        INVALID,
        "reason",
        id="fail-empty-reason",
    ),
    pytest.param(
        _lease_call("ReportFailure", pb.ReportFailureRequest, reason="r" * 2001),
        INVALID,
        "reason",
        id="fail-oversized-reason",
    ),
    pytest.param(
        _lease_call("ReportFailure", pb.ReportFailureRequest, reason="x", details_json='"str"'),
        INVALID,
        "details_json",
        id="fail-details-not-object",
    ),
    pytest.param(
        _lease_call("RenewLease", pb.RenewLeaseRequest, lease_duration=Duration(seconds=10**6)),
        INVALID,
        "lease_duration",
        id="renew-lease-too-long",
    ),
    pytest.param(
        lambda c: c["stub"].RedriveTickets(
            pb.RedriveTicketsRequest(tenant_id=TENANT, ticket_ids=[], operator="o")
        ),
        INVALID,
        "ticket_ids",
        id="redrive-no-ids",
    ),
    pytest.param(
        lambda c: c["stub"].RedriveTickets(
            pb.RedriveTicketsRequest(tenant_id=TENANT, ticket_ids=[c["claim"].ticket.id], operator="")
        ),
        INVALID,
        "operator",
        id="redrive-no-operator",
    ),
    pytest.param(
        lambda c: c["stub"].RedriveTickets(
            pb.RedriveTicketsRequest(tenant_id=TENANT, ticket_ids=[UNKNOWN], operator="o")
        ),
        NOT_FOUND,
        UNKNOWN,
        id="redrive-unknown-id",
    ),
    pytest.param(
        lambda c: c["stub"].RedriveTickets(
            pb.RedriveTicketsRequest(tenant_id=TENANT, ticket_ids=[c["claim"].ticket.id], operator="o")
        ),
        PRECONDITION,
        "not quarantined",
        id="redrive-not-quarantined",
    ),
    pytest.param(
        lambda c: c["stub"].ReleaseAgentClaims(pb.ReleaseAgentClaimsRequest(tenant_id=TENANT, agent_id="")),
        INVALID,
        "agent_id",
        id="release-agent-empty-agent",
    ),
]


@pytest.mark.parametrize(("call", "code", "fragment"), CASES)
def test_bad_input_is_rejected_and_writes_nothing(
    ticketing: TicketingHarness, call: Callable[[Ctx], Any], code: grpc.StatusCode, fragment: str
) -> None:
    create_project(ticketing.stub, TENANT, [spec("a"), spec("b")])
    ctx: Ctx = {"stub": ticketing.stub, "claim": claim(ticketing.stub, TENANT, "agent-1")}
    before = snapshot(ticketing)
    with pytest.raises(grpc.RpcError) as info:
        call(ctx)
    err = info.value
    assert err.code() == code, err.details()
    assert fragment in err.details()
    assert error_info(err).domain == "swarm.ticketing"
    assert snapshot(ticketing) == before
