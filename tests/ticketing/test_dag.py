"""The dependency graph: blocked until parents are done; cycles rejected."""

from __future__ import annotations

import grpc

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, create_project, get, spec, submit, tenant

pytestmark = BACKENDS


def test_dependents_wait_for_every_parent(ticketing: TicketingHarness) -> None:
    t = tenant()
    # Diamond: design -> (api, ui) -> release
    created = create_project(
        ticketing.stub,
        t,
        [
            spec("design"),
            spec("api", depends_on=["design"], priority=5),
            spec("ui", depends_on=["design"]),
            spec("release", depends_on=["api", "ui"], priority=100),
        ],
    ).tickets
    ids = {tk.name.removeprefix("ticket "): tk.id for tk in created}
    states = {tk.name.removeprefix("ticket "): tk.state for tk in created}
    assert states == {
        "design": pb.TICKET_STATE_READY,
        "api": pb.TICKET_STATE_BLOCKED,
        "ui": pb.TICKET_STATE_BLOCKED,
        "release": pb.TICKET_STATE_BLOCKED,
    }
    design = claim(ticketing.stub, t, "a")
    assert design.ticket.id == ids["design"]
    assert not claim(ticketing.stub, t, "b").HasField("ticket")
    out = submit(ticketing.stub, t, design)
    assert sorted(out.unblocked_ticket_ids) == sorted([ids["api"], ids["ui"]])

    api = claim(ticketing.stub, t, "a")
    assert api.ticket.id == ids["api"]  # priority 5 beats ui
    assert submit(ticketing.stub, t, api).unblocked_ticket_ids == []
    assert get(ticketing.stub, t, ids["release"]).state == pb.TICKET_STATE_BLOCKED
    ui = claim(ticketing.stub, t, "a")
    assert ui.ticket.id == ids["ui"]
    assert list(submit(ticketing.stub, t, ui).unblocked_ticket_ids) == [ids["release"]]
    release = claim(ticketing.stub, t, "a")
    assert release.ticket.id == ids["release"]
    assert sorted(release.ticket.depends_on) == sorted([ids["api"], ids["ui"]])


def test_a_cycle_is_rejected_naming_its_members(ticketing: TicketingHarness) -> None:
    t = tenant()
    tickets = [
        spec("root"),
        spec("parse", depends_on=["root", "emit"]),
        spec("check", depends_on=["parse"]),
        spec("emit", depends_on=["check"]),
    ]
    with raises_status(
        grpc.StatusCode.INVALID_ARGUMENT, "dependency cycle", "parse", "check", "emit"
    ) as caught:
        create_project(ticketing.stub, t, tickets)
    assert "root" not in caught[0].details()
    assert ticketing.stub.ListProjects(pb.ListProjectsRequest(tenant_id=t)).projects == []


def test_long_chain_is_accepted_and_unblocks_in_order(ticketing: TicketingHarness) -> None:
    t = tenant()
    n = 3000  # deep enough to break a recursive cycle check
    create_project(
        ticketing.stub, t, [spec("0"), *(spec(str(i), depends_on=[str(i - 1)]) for i in range(1, n))]
    )
    for i in range(3):
        c = claim(ticketing.stub, t, "a")
        assert c.ticket.name == f"ticket {i}"
        submit(ticketing.stub, t, c)
