"""Every listing pages through all of its rows exactly once, in its order,
with rows added between pages neither repeated nor lost."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmcommon.pagination import PageToken
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import CODER, REVIEWER, claim, create_project, spec, submit, tenant

pytestmark = BACKENDS

Fetch = Callable[[str], tuple[list[str], str]]


def _all(fetch: Fetch, between: Callable[[], object] = lambda: None) -> list[str]:
    seen: list[str] = []
    token = ""
    while True:
        items, token = fetch(token)
        seen.extend(items)
        if not token:
            return seen
        between()


def test_projects_page_oldest_first_and_new_ones_come_last(ticketing: TicketingHarness) -> None:
    t = tenant()
    ids = []
    for i in range(3):
        ticketing.clock.advance(timedelta(seconds=1))
        ids.append(create_project(ticketing.stub, t, [spec("a")], name=f"p{i}").project.id)

    def fetch(token: str) -> tuple[list[str], str]:
        r = ticketing.stub.ListProjects(pb.ListProjectsRequest(tenant_id=t, page_size=1, page_token=token))
        return [p.id for p in r.projects], r.next_page_token

    def add_one() -> None:
        if len(ids) < 5:
            ticketing.clock.advance(timedelta(seconds=1))
            ids.append(create_project(ticketing.stub, t, [spec("a")]).project.id)

    assert _all(fetch, add_one) == ids


def test_tickets_page_in_creation_order_within_a_filter(ticketing: TicketingHarness) -> None:
    t = tenant()
    first = create_project(ticketing.stub, t, [spec(str(i)) for i in range(5)])
    create_project(ticketing.stub, t, [spec("other")])
    project = first.project.id

    def fetch(token: str) -> tuple[list[str], str]:
        r = ticketing.stub.ListTickets(
            pb.ListTicketsRequest(
                tenant_id=t, project_id=project, state=pb.TICKET_STATE_READY, page_size=2, page_token=token
            )
        )
        return [tk.id for tk in r.tickets], r.next_page_token

    assert _all(fetch) == [tk.id for tk in first.tickets]


def test_ticket_events_page_in_order(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a")]).tickets[0]
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent"))

    def fetch(token: str) -> tuple[list[str], str]:
        r = ticketing.stub.ListTicketEvents(
            pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id, page_size=1, page_token=token)
        )
        return [e.event_type for e in r.events], r.next_page_token

    assert _all(fetch) == ["created", "assigned", "completed"]


def test_merge_requests_page_in_order(ticketing: TicketingHarness) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec(str(i), stages=[CODER, REVIEWER]) for i in range(3)])
    branches = []
    for i in range(3):
        c = claim(ticketing.stub, t, "coder", role=CODER)
        branches.append(f"swarm/{i}")
        submit(
            ticketing.stub,
            t,
            c,
            json.dumps({"branch": branches[-1], "commit": "cccccccccccccccccccccccccccccccccccccccc"}),
        )

    def fetch(token: str) -> tuple[list[str], str]:
        r = ticketing.stub.ListMergeRequests(
            pb.ListMergeRequestsRequest(
                tenant_id=t, state=pb.MERGE_REQUEST_STATE_OPEN, page_size=1, page_token=token
            )
        )
        return [m.branch for m in r.merge_requests], r.next_page_token

    assert _all(fetch) == branches


def test_a_forged_page_token_is_refused_by_every_listing(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = create_project(ticketing.stub, t, [spec("a")]).tickets[0]
    # A token of the right listing whose position has the wrong shape, and garbage.
    calls: list[Callable[[str], Any]] = [
        lambda tok: ticketing.stub.ListProjects(pb.ListProjectsRequest(tenant_id=t, page_token=tok)),
        lambda tok: ticketing.stub.ListTickets(pb.ListTicketsRequest(tenant_id=t, page_token=tok)),
        lambda tok: ticketing.stub.ListTicketEvents(
            pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket.id, page_token=tok)
        ),
        lambda tok: ticketing.stub.ListDeadLetters(pb.ListDeadLettersRequest(tenant_id=t, page_token=tok)),
        lambda tok: ticketing.stub.ListMergeRequests(
            pb.ListMergeRequestsRequest(tenant_id=t, page_token=tok)
        ),
    ]
    filters: list[list[Any]] = [
        ["projects", t],
        ["tickets", t, None, None, None],
        ["events", t, ticket.id],
        ["dlq", t, None],
        ["merge_requests", t, None, None, None],
    ]
    for call, f in zip(calls, filters, strict=True):
        forged = PageToken(f).encode([{"sql": "1=1"}, "x", "y"])
        for token in (forged, base64.urlsafe_b64encode(b"not json").decode()):
            with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "page_token"):
                call(token)
