"""Collaboration patterns over real gRPC on both backends: a pattern sets a
ticket's stages; a checking stage's refusal goes back to the coder with its
findings; an ensemble's attempts are leased apart, its judge chooses one with
a rationale, and only the chosen branch becomes a merge request."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from swarm.ticketing.v1 import ticketing_pb2 as pb
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.status import raises_status
from tests.support.ticketing import claim, get, outbox_events, snapshot, spec, submit, tenant

pytestmark = BACKENDS
CODER, SECURITY, TESTS, REVIEWER, JUDGE = (
    pb.AGENT_ROLE_CODER,
    pb.AGENT_ROLE_SECURITY,
    pb.AGENT_ROLE_TESTS,
    pb.AGENT_ROLE_REVIEWER,
    pb.AGENT_ROLE_JUDGE,
)
PIPELINE, ENSEMBLE = pb.COLLABORATION_PATTERN_PIPELINE, pb.COLLABORATION_PATTERN_ENSEMBLE


def _sha(n: int) -> str:
    return f"{n:040x}"


def _project(h: TicketingHarness, t: str, *tickets: pb.TicketSpec, **kw: Any) -> pb.CreateProjectResponse:
    return h.stub.CreateProject(pb.CreateProjectRequest(tenant_id=t, name="p", tickets=list(tickets), **kw))


def _work(branch: str, n: int) -> str:
    return json.dumps({"branch": branch, "commit": _sha(n), "summary": f"work {n}"})


def _refuse(h: TicketingHarness, t: str, c: pb.ClaimTicketResponse, reason: str, **details: Any) -> None:
    h.stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=t,
            ticket_id=c.ticket.id,
            claim_token=c.lease.claim_token,
            reason=reason,
            details_json=json.dumps({"review": "rejected", **details}),
        )
    )


def _audit(h: TicketingHarness, t: str, ticket_id: str) -> list[pb.TicketEvent]:
    req = pb.ListTicketEventsRequest(tenant_id=t, ticket_id=ticket_id, page_size=200)
    return list(h.stub.ListTicketEvents(req).events)


def _mrs(h: TicketingHarness, t: str) -> list[pb.MergeRequest]:
    return list(h.stub.ListMergeRequests(pb.ListMergeRequestsRequest(tenant_id=t)).merge_requests)


def test_a_pattern_sets_the_stages(ticketing: TicketingHarness) -> None:
    t = tenant()
    made = _project(
        ticketing,
        t,
        spec("plain"),
        pb.TicketSpec(key="piped", name="piped", pattern=PIPELINE),
        spec("listed", stages=[CODER, TESTS]),
        pattern=pb.COLLABORATION_PATTERN_SINGLE,
    )
    plain, piped, listed = made.tickets
    assert list(plain.stages) == [CODER, REVIEWER] and plain.pattern == pb.COLLABORATION_PATTERN_SINGLE
    assert list(piped.stages) == [CODER, SECURITY, TESTS, REVIEWER] and piped.pattern == PIPELINE
    assert list(listed.stages) == [CODER, TESTS] and listed.pattern == pb.COLLABORATION_PATTERN_CUSTOM
    assert made.project.pattern == pb.COLLABORATION_PATTERN_SINGLE


@pytest.mark.parametrize(
    ("ticket", "field"),
    [
        (pb.TicketSpec(key="a", name="a", pattern=PIPELINE, stages=[CODER]), "tickets[0].stages"),
        (pb.TicketSpec(key="a", name="a", pattern=ENSEMBLE, ensemble_size=1), "tickets[0].ensemble_size"),
        (pb.TicketSpec(key="a", name="a", pattern=ENSEMBLE, ensemble_size=9), "tickets[0].ensemble_size"),
        (
            pb.TicketSpec(key="a", name="a", pattern=ENSEMBLE, ensemble_size=3, ensemble_quorum=4),
            "tickets[0].ensemble_quorum",
        ),
        (pb.TicketSpec(key="a", name="a", pattern=PIPELINE, ensemble_size=3), "tickets[0].ensemble_size"),
        (pb.TicketSpec(key="a", name="a", pattern=42), "tickets[0].pattern"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_pattern_is_refused_naming_the_field_and_writes_nothing(
    ticketing: TicketingHarness, ticket: pb.TicketSpec, field: str
) -> None:
    before = snapshot(ticketing)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, field):
        _project(ticketing, tenant(), ticket)
    assert snapshot(ticketing) == before


def test_security_sends_the_work_back_to_the_coder_with_its_findings_then_passes(
    ticketing: TicketingHarness,
) -> None:
    t = tenant()
    ticket = _project(ticketing, t, pb.TicketSpec(key="a", name="a", pattern=PIPELINE)).tickets[0]
    branch = f"swarm/{ticket.id[:8]}-a"
    submit(ticketing.stub, t, claim(ticketing.stub, t, "coder-1", role=CODER), _work(branch, 1))
    assert _mrs(ticketing, t) == [], "no merge request before the reviewer is next"

    checker = claim(ticketing.stub, t, "security-1", role=SECURITY)
    assert json.loads(checker.ticket.result_json)["branch"] == branch
    finding = {"file": "app.py", "issue": "SQL built from user input", "fix": "bind parameters"}
    _refuse(
        ticketing,
        t,
        checker,
        "security review rejected: app.py: SQL built from user input",
        findings=[finding],
    )

    back = get(ticketing.stub, t, ticket.id)
    assert (back.state, back.stage_index, back.failure_count) == (pb.TICKET_STATE_READY, 0, 1)
    assert "SQL built from user input" in back.last_failure_reason
    sent = [e for e in _audit(ticketing, t, ticket.id) if e.event_type == "sent_back"]
    assert len(sent) == 1 and json.loads(sent[0].new_value_json) == {"stage": "coder", "findings": [finding]}

    rework = claim(ticketing.stub, t, "coder-2", role=CODER)
    assert rework.ticket.id == ticket.id and "SQL built" in rework.ticket.last_failure_reason
    submit(ticketing.stub, t, rework, _work(branch, 2))
    submit(ticketing.stub, t, claim(ticketing.stub, t, "security-1", role=SECURITY), _work(branch, 2))
    submit(ticketing.stub, t, claim(ticketing.stub, t, "tests-1", role=TESTS), _work(branch, 3))
    (mr,) = _mrs(ticketing, t)
    assert (mr.branch, mr.commit, mr.state) == (branch, _sha(3), pb.MERGE_REQUEST_STATE_OPEN)
    reviewer = claim(ticketing.stub, t, "reviewer-1", role=REVIEWER)
    submit(ticketing.stub, t, reviewer, json.dumps({"branch": branch, "merge_commit": _sha(9)}))
    assert get(ticketing.stub, t, ticket.id).state == pb.TICKET_STATE_DONE

    stages = [
        d["completed_stage"]
        for kind, d in outbox_events(ticketing, t)
        if kind == "collaboration.stage_complete"
    ]
    assert stages == ["coder", "coder", "security", "tests"]


def test_failing_tests_send_the_work_back_past_security(ticketing: TicketingHarness) -> None:
    t = tenant()
    ticket = _project(ticketing, t, pb.TicketSpec(key="a", name="a", pattern=PIPELINE)).tickets[0]
    branch = f"swarm/{ticket.id[:8]}-a"
    submit(ticketing.stub, t, claim(ticketing.stub, t, "coder-1", role=CODER), _work(branch, 1))
    submit(ticketing.stub, t, claim(ticketing.stub, t, "security-1", role=SECURITY), _work(branch, 1))
    _refuse(ticketing, t, claim(ticketing.stub, t, "tests-1", role=TESTS), "tests failed (exit 1): FAILED")
    back = get(ticketing.stub, t, ticket.id)
    assert (back.state, back.stage_index) == (pb.TICKET_STATE_READY, 0)
    assert claim(ticketing.stub, t, "security-2", role=SECURITY).ticket.id == "", "not the security stage's"


def _ensemble(h: TicketingHarness, t: str, **kw: Any) -> tuple[pb.Ticket, list[pb.Ticket]]:
    made = _project(h, t, pb.TicketSpec(key="e", name="Add a parser", pattern=ENSEMBLE, **kw)).tickets
    return made[0], list(made[1:])


def _judge(h: TicketingHarness, t: str, c: pb.ClaimTicketResponse, **result: Any) -> pb.SubmitWorkResponse:
    return submit(h.stub, t, c, json.dumps(result))


def test_an_ensembles_judge_sees_every_attempt_and_only_its_choice_is_reviewed(
    ticketing: TicketingHarness,
) -> None:
    t = tenant()
    main, attempts = _ensemble(ticketing, t)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert {a.ensemble_ticket_id for a in attempts} == {main.id}
    assert main.state == pb.TICKET_STATE_BLOCKED and list(main.stages) == [JUDGE, REVIEWER]
    assert set(main.depends_on) == {a.id for a in attempts}
    project = ticketing.stub.GetProject(pb.GetProjectRequest(tenant_id=t, project_id=main.project_id)).project
    assert project.ticket_count == 1

    leases = [claim(ticketing.stub, t, f"coder-{n}", role=CODER) for n in (1, 2, 3)]
    assert len({c.ticket.id for c in leases}) == 3, "each attempt has its own lease"
    for n, c in enumerate(leases, 1):
        assert claim(ticketing.stub, t, "judge-1", role=JUDGE).ticket.id == "", "not before the attempts end"
        submit(ticketing.stub, t, c, _work(f"swarm/attempt-{c.ticket.attempt}", n))

    judge = claim(ticketing.stub, t, "judge-1", role=JUDGE)
    assert judge.ticket.id == main.id
    assert [(a.attempt, a.state) for a in judge.attempts] == [(n, pb.TICKET_STATE_DONE) for n in (1, 2, 3)]
    before = snapshot(ticketing)
    for bad, field in [
        ({"choice": "4", "rationale": "x"}, "result_json.choice"),
        ({"choice": "2", "rationale": " "}, "result_json.rationale"),
        ({"choice": "2"}, "result_json.rationale"),
    ]:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT, field):
            _judge(ticketing, t, judge, **bad)
    assert snapshot(ticketing) == before

    second = judge.attempts[1]
    _judge(ticketing, t, judge, choice=second.ticket_id, rationale="Attempt 2 handles empty input.")
    now = get(ticketing.stub, t, main.id)
    assert now.stages[now.stage_index] == REVIEWER
    assert json.loads(now.result_json)["branch"] == "swarm/attempt-2"
    (judged,) = [e for e in _audit(ticketing, t, main.id) if e.event_type == "judged"]
    assert judged.rationale == "Attempt 2 handles empty input."
    assert json.loads(judged.new_value_json)["choice"] == second.ticket_id
    (mr,) = _mrs(ticketing, t)
    assert (mr.ticket_id, mr.branch, mr.commit) == (main.id, "swarm/attempt-2", _sha(2))

    # The reviewer turns it down: back to the judge, which must choose again.
    _refuse(
        ticketing, t, claim(ticketing.stub, t, "reviewer-1", role=REVIEWER), "no", branch="swarm/attempt-2"
    )
    again = claim(ticketing.stub, t, "judge-2", role=JUDGE)
    assert [a.rejected for a in again.attempts] == [False, True, False]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "rejected in review"):
        _judge(ticketing, t, again, choice=2, rationale="still 2")
    _judge(ticketing, t, again, choice=3, rationale="3 is the other complete one")
    reviewer = claim(ticketing.stub, t, "reviewer-1", role=REVIEWER)
    submit(ticketing.stub, t, reviewer, json.dumps({"branch": "swarm/attempt-3", "merge_commit": _sha(9)}))
    assert get(ticketing.stub, t, main.id).state == pb.TICKET_STATE_DONE
    project = ticketing.stub.GetProject(pb.GetProjectRequest(tenant_id=t, project_id=main.project_id)).project
    assert (project.ticket_count, project.done_count) == (1, 1)

    events = outbox_events(ticketing, t)
    prs = [(kind, d["branch"]) for kind, d in events if kind.startswith("pr.")]
    assert prs == [
        ("pr.opened", "swarm/attempt-2"),
        ("pr.rejected", "swarm/attempt-2"),
        ("pr.opened", "swarm/attempt-3"),
        ("pr.merged", "swarm/attempt-3"),
    ]
    completed = [d["ticket_id"] for kind, d in events if kind == "ticket.completed"]
    assert completed == [main.id], "attempts are stages of the ensemble, not tickets completed"
    attempt_stages = [
        d for kind, d in events if kind == "collaboration.stage_complete" and "ensemble_ticket_id" in d
    ]
    assert sorted(d["attempt"] for d in attempt_stages) == [1, 2, 3]
    judged_events = [d for kind, d in events if kind == "collaboration.stage_complete" and "rationale" in d]
    assert [d["attempt"] for d in judged_events] == [2, 3]


def _quarantine(h: TicketingHarness, t: str, attempt_id: str) -> None:
    for n in range(3):  # the default max_failures
        c = claim(h.stub, t, f"coder-bad-{n}", role=CODER)
        assert c.ticket.id == attempt_id
        h.stub.ReportFailure(
            pb.ReportFailureRequest(
                tenant_id=t, ticket_id=c.ticket.id, claim_token=c.lease.claim_token, reason="cannot build"
            )
        )


def test_a_failed_attempt_does_not_hold_up_the_judge(ticketing: TicketingHarness) -> None:
    t = tenant()
    main, attempts = _ensemble(ticketing, t)
    _quarantine(ticketing, t, attempts[0].id)
    assert get(ticketing.stub, t, main.id).state == pb.TICKET_STATE_BLOCKED, "two attempts still running"
    for n in (2, 3):
        c = claim(ticketing.stub, t, f"coder-{n}", role=CODER)
        submit(ticketing.stub, t, c, _work(f"swarm/attempt-{c.ticket.attempt}", n))
    judge = claim(ticketing.stub, t, "judge-1", role=JUDGE)
    assert judge.ticket.id == main.id
    assert [a.state for a in judge.attempts] == [
        pb.TICKET_STATE_QUARANTINED,
        pb.TICKET_STATE_DONE,
        pb.TICKET_STATE_DONE,
    ]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "not done"):
        _judge(ticketing, t, judge, choice=1, rationale="the first")


def test_a_quorum_starts_the_judge_before_the_last_attempt_ends(ticketing: TicketingHarness) -> None:
    t = tenant()
    main, _ = _ensemble(ticketing, t, ensemble_size=3, ensemble_quorum=2)
    leases = [claim(ticketing.stub, t, f"coder-{n}", role=CODER) for n in (1, 2, 3)]
    submit(ticketing.stub, t, leases[0], _work("swarm/attempt-a", 1))
    assert get(ticketing.stub, t, main.id).state == pb.TICKET_STATE_BLOCKED
    submit(ticketing.stub, t, leases[1], _work("swarm/attempt-b", 2))
    assert get(ticketing.stub, t, main.id).state == pb.TICKET_STATE_READY


def test_an_ensemble_whose_every_attempt_failed_is_quarantined(ticketing: TicketingHarness) -> None:
    t = tenant()
    main, attempts = _ensemble(ticketing, t, ensemble_size=2)
    for a in attempts:
        _quarantine(ticketing, t, a.id)
    held = get(ticketing.stub, t, main.id)
    assert held.state == pb.TICKET_STATE_QUARANTINED
    assert held.quarantine_reason == "every ensemble attempt failed (2 of 2 quarantined or cancelled)"

    # Redriving the ensemble ticket redrives its attempts and waits for them again.
    redriven = ticketing.stub.RedriveTickets(
        pb.RedriveTicketsRequest(
            tenant_id=t, ticket_ids=[main.id], operator="ops@acme", reason="toolchain fixed"
        )
    ).tickets
    assert [r.state for r in redriven] == [pb.TICKET_STATE_BLOCKED]
    again = [get(ticketing.stub, t, a.id) for a in attempts]
    assert [(a.state, a.failure_count) for a in again] == [(pb.TICKET_STATE_READY, 0)] * 2
    assert any(
        "redriven with its ensemble ticket" in e.rationale for e in _audit(ticketing, t, attempts[0].id)
    )
    for n in (1, 2):
        c = claim(ticketing.stub, t, f"coder-{n}", role=CODER)
        submit(ticketing.stub, t, c, _work(f"swarm/attempt-{c.ticket.attempt}", n))
    assert claim(ticketing.stub, t, "judge-1", role=JUDGE).ticket.id == main.id


def test_attempts_take_over_the_ensembles_dependencies(ticketing: TicketingHarness) -> None:
    t = tenant()
    made = _project(
        ticketing,
        t,
        spec("base"),
        pb.TicketSpec(key="e", name="e", pattern=ENSEMBLE, ensemble_size=2, depends_on=["base"]),
        spec("after", depends_on=["e"]),
    ).tickets
    base, main, a1, a2, after = made
    assert {a1.state, a2.state} == {pb.TICKET_STATE_BLOCKED} and list(a1.depends_on) == [base.id]
    assert list(after.depends_on) == [main.id]
    submit(ticketing.stub, t, claim(ticketing.stub, t, "coder-0"), _work("swarm/base", 1))
    assert {get(ticketing.stub, t, a.id).state for a in (a1, a2)} == {pb.TICKET_STATE_READY}
    assert get(ticketing.stub, t, after.id).state == pb.TICKET_STATE_BLOCKED


def test_a_judge_cannot_smuggle_a_branch_of_its_own_into_review(ticketing: TicketingHarness) -> None:
    # The attack: a hostile judge names a branch no attempt pushed, hoping the
    # reviewer merges it. The server takes branch and commit from the chosen attempt only.
    t = tenant()
    main, _ = _ensemble(ticketing, t, ensemble_size=2)
    for n in (1, 2):
        c = claim(ticketing.stub, t, f"coder-{n}", role=CODER)
        submit(ticketing.stub, t, c, _work(f"swarm/attempt-{c.ticket.attempt}", n))
    judge = claim(ticketing.stub, t, "judge-evil", role=JUDGE)
    _judge(ticketing, t, judge, choice=1, rationale="fine", branch="evil/backdoor", commit=_sha(666))
    stored = json.loads(get(ticketing.stub, t, main.id).result_json)
    assert (stored["branch"], stored["commit"]) == ("swarm/attempt-1", _sha(1))
    assert [m.branch for m in _mrs(ticketing, t)] == ["swarm/attempt-1"]
