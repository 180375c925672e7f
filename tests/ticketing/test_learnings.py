"""Learning from history through ticketing's real gRPC server (both
backends): a failure reason becomes a lesson of the project's similar
tickets (never another tenant's), one lesson however often it recurs, its
effectiveness moving with the outcomes of the stages it was given to; bad
inputs write nothing; only a lease's holder gets its lessons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from swarm.ticketing.v1 import learning_pb2 as lpb
from swarm.ticketing.v1 import learning_pb2_grpc as lpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.gitops import Author, init_repository
from tests.support.harness import BACKENDS, TicketingHarness, start_ticketing
from tests.support.status import raises_status
from tests.support.ticketing import tenant

pytestmark = BACKENDS
REASON = "tests import from src/ but the package is app/"


@pytest.fixture
def lessons(ticketing: TicketingHarness) -> Iterator[lpb_grpc.LearningServiceStub]:
    yield lpb_grpc.LearningServiceStub(ticketing.channel)


def _project(stub: Any, t: str, n: int = 2) -> tuple[str, list[str]]:
    made = stub.CreateProject(
        pb.CreateProjectRequest(
            tenant_id=t,
            name="p",
            tickets=[
                pb.TicketSpec(
                    key=f"k{i}", name=f"Add the app package tests {i}", description="Write tests for app/"
                )
                for i in range(n)
            ],
        )
    )
    return made.project.id, [x.id for x in made.tickets]


def _claim(stub: Any, t: str, agent: str) -> pb.ClaimTicketResponse:
    c = stub.ClaimTicket(pb.ClaimTicketRequest(tenant_id=t, agent_id=agent))
    assert c.HasField("ticket")
    return c


def _fail(stub: Any, t: str, c: pb.ClaimTicketResponse, reason: str = REASON, details: str = "") -> None:
    stub.ReportFailure(
        pb.ReportFailureRequest(
            tenant_id=t,
            ticket_id=c.ticket.id,
            claim_token=c.lease.claim_token,
            reason=reason,
            details_json=details,
        )
    )


def _ask(lessons: Any, t: str, c: pb.ClaimTicketResponse) -> lpb.GetLessonsResponse:
    return lessons.GetLessons(
        lpb.GetLessonsRequest(tenant_id=t, ticket_id=c.ticket.id, claim_token=c.lease.claim_token)
    )


def _learnings(lessons: Any, t: str, project_id: str) -> list[lpb.Learning]:
    return list(lessons.ListLearnings(lpb.ListLearningsRequest(tenant_id=t, project_id=project_id)).learnings)


def test_a_failure_becomes_a_lesson_of_the_projects_similar_tickets_only(
    ticketing: TicketingHarness, lessons: Any
) -> None:
    a, b = tenant(), tenant()
    pid, _ = _project(ticketing.stub, a)
    _project(ticketing.stub, b)
    first, second = _claim(ticketing.stub, a, "a1"), _claim(ticketing.stub, a, "a2")
    _fail(ticketing.stub, a, first)

    got = _ask(lessons, a, second)
    assert "## Lessons from This Project" in got.prompt_section
    assert REASON in got.prompt_section
    (learned,) = _learnings(lessons, a, pid)
    assert list(got.learning_ids) == [learned.id]
    assert learned.kind == lpb.LEARNING_KIND_FAILURE and learned.source == "failure"

    theirs = _ask(lessons, b, _claim(ticketing.stub, b, "b1"))
    assert REASON not in theirs.prompt_section and list(theirs.learning_ids) == []


def test_the_same_reason_twice_is_one_learning(ticketing: TicketingHarness, lessons: Any) -> None:
    t = tenant()
    pid, _ = _project(ticketing.stub, t)
    _fail(ticketing.stub, t, _claim(ticketing.stub, t, "x"))
    _fail(ticketing.stub, t, _claim(ticketing.stub, t, "y"), reason=REASON.replace("src/", "lib/"))
    assert len(_learnings(lessons, t, pid)) == 1


def test_effectiveness_moves_with_the_outcomes_of_tickets_given_the_lesson(
    ticketing: TicketingHarness, lessons: Any
) -> None:
    t = tenant()
    pid, _ = _project(ticketing.stub, t, 3)
    _fail(ticketing.stub, t, _claim(ticketing.stub, t, "x"))
    (before,) = _learnings(lessons, t, pid)
    assert before.effectiveness == pytest.approx(0.5)

    good = _claim(ticketing.stub, t, "good")
    assert _ask(lessons, t, good).learning_ids == [before.id]
    _ask(lessons, t, good)  # asking again within one lease is one use
    ticketing.stub.SubmitWork(
        pb.SubmitWorkRequest(
            tenant_id=t, ticket_id=good.ticket.id, claim_token=good.lease.claim_token, result_json="{}"
        )
    )
    (after,) = _learnings(lessons, t, pid)
    assert (after.uses, after.successes, after.failures) == (1, 1, 0)
    assert after.effectiveness == pytest.approx(2 / 3)

    bad = _claim(ticketing.stub, t, "bad")
    assert _ask(lessons, t, bad).learning_ids == [before.id]
    _fail(ticketing.stub, t, bad, reason="something else entirely broke")
    lesson = next(x for x in _learnings(lessons, t, pid) if x.id == before.id)
    assert (lesson.uses, lesson.successes, lesson.failures) == (2, 1, 1)
    assert lesson.effectiveness == pytest.approx(0.5)


def test_review_rejections_and_security_findings_are_learnings(
    ticketing: TicketingHarness, lessons: Any
) -> None:
    t = tenant()
    pid, _ = _project(ticketing.stub, t)
    _fail(
        ticketing.stub,
        t,
        _claim(ticketing.stub, t, "r"),
        "review rejected: no docstrings",
        '{"review":"rejected"}',
    )
    finding = '{"findings":[{"file":"app/x.py","issue":"eval on input","fix":"parse it"}]}'
    _fail(ticketing.stub, t, _claim(ticketing.stub, t, "s"), "security refused", finding)
    got = {(x.source, x.content) for x in _learnings(lessons, t, pid)}
    assert got == {
        ("review", "review rejected: no docstrings"),
        ("security", "Security: eval on input in app/x.py (fix: parse it)"),
    }


def test_conventions_are_in_the_prompt_and_bad_ones_write_nothing(
    ticketing: TicketingHarness, lessons: Any
) -> None:
    t, other = tenant(), tenant()
    pid, _ = _project(ticketing.stub, t)
    made = lessons.AddConvention(
        lpb.AddConventionRequest(tenant_id=t, project_id=pid, category="naming", content="Modules are nouns")
    ).convention
    assert made.origin == lpb.CONVENTION_ORIGIN_EXPLICIT
    for request, field in [
        (lpb.AddConventionRequest(tenant_id=t, project_id=pid, content="  "), "content"),
        (lpb.AddConventionRequest(tenant_id=t, project_id=pid, content="x" * 1001), "content"),
        (lpb.AddConventionRequest(tenant_id=t, project_id=pid, category="a b", content="x"), "category"),
        (lpb.AddConventionRequest(tenant_id=t, project_id="nope", content="x"), "project_id"),
    ]:
        with raises_status(grpc.StatusCode.INVALID_ARGUMENT, field):
            lessons.AddConvention(request)
    with raises_status(grpc.StatusCode.NOT_FOUND):
        lessons.AddConvention(lpb.AddConventionRequest(tenant_id=other, project_id=pid, content="x"))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        lessons.DeleteConvention(lpb.DeleteConventionRequest(tenant_id=other, convention_id=made.id))
    listed = lessons.ListConventions(lpb.ListConventionsRequest(tenant_id=t, project_id=pid)).conventions
    assert [c.id for c in listed] == [made.id]

    section = _ask(lessons, t, _claim(ticketing.stub, t, "c")).prompt_section
    assert section.startswith("## Codebase Conventions\n- naming: Modules are nouns")


def test_another_tenants_learning_cannot_be_deleted(ticketing: TicketingHarness, lessons: Any) -> None:
    t, other = tenant(), tenant()
    pid, _ = _project(ticketing.stub, t)
    _fail(ticketing.stub, t, _claim(ticketing.stub, t, "x"))
    (mine,) = _learnings(lessons, t, pid)
    with raises_status(grpc.StatusCode.NOT_FOUND, mine.id):
        lessons.DeleteLearning(lpb.DeleteLearningRequest(tenant_id=other, learning_id=mine.id))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        lessons.ListLearnings(lpb.ListLearningsRequest(tenant_id=other, project_id=pid))
    assert [x.id for x in _learnings(lessons, t, pid)] == [mine.id]
    lessons.DeleteLearning(lpb.DeleteLearningRequest(tenant_id=t, learning_id=mine.id))
    assert _learnings(lessons, t, pid) == []


def test_lessons_need_the_lease(ticketing: TicketingHarness, lessons: Any) -> None:
    t = tenant()
    _project(ticketing.stub, t)
    mine, theirs = _claim(ticketing.stub, t, "me"), _claim(ticketing.stub, t, "them")
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "claimed by another agent"):
        lessons.GetLessons(
            lpb.GetLessonsRequest(tenant_id=t, ticket_id=theirs.ticket.id, claim_token=mine.lease.claim_token)
        )
    with raises_status(grpc.StatusCode.NOT_FOUND):
        lessons.GetLessons(
            lpb.GetLessonsRequest(
                tenant_id=tenant(), ticket_id=mine.ticket.id, claim_token=mine.lease.claim_token
            )
        )


def test_conventions_inferred_from_a_real_repository_reach_the_prompt_once(db: str, tmp_path: Path) -> None:
    """The project's repository is read once, by the first lease holder that
    asks for lessons: its test layout, test naming, lint configuration,
    source layout and module naming become `inferred` conventions, after the
    ones a tenant stated."""
    root = tmp_path / "repos"
    t = tenant()
    files = {
        "pyproject.toml": '[project]\nname = "app"\n\n[tool.ruff]\nline-length = 100\n',
        "src/app/__init__.py": "",
        "src/app/billing_rules.py": "RATE = 1\n",
        "src/app/invoices.py": "from app.billing_rules import RATE\n",
        "tests/test_invoices.py": "def test_rate():\n    assert True\n",
        "tests/test_billing_rules.py": "def test_rules():\n    assert True\n",
    }
    init_repository(root / t / "app.git", files, Author("T", "t@example.invalid"))
    h = start_ticketing(db, local_repository_root=str(root))
    try:
        stub = lpb_grpc.LearningServiceStub(h.channel)
        made = h.stub.CreateProject(
            pb.CreateProjectRequest(
                tenant_id=t,
                name="p",
                repository=str(root / t / "app.git"),
                tickets=[pb.TicketSpec(key=f"k{i}", name=f"Invoice rule {i}") for i in range(2)],
            )
        )
        pid = made.project.id
        stub.AddConvention(lpb.AddConventionRequest(tenant_id=t, project_id=pid, content="Money is in cents"))
        first = _ask(stub, t, _claim(h.stub, t, "coder-1")).prompt_section
        assert first.splitlines() == [
            "## Codebase Conventions",
            "- general: Money is in cents",
            "- test_convention: Tests live under tests/",
            "- test_convention: Test modules are named test_*.py",
            "- layout: Source code lives under src/",
            "- lint: Code is linted with ruff (configured in pyproject.toml)",
            "- naming: Python modules are snake_case",
        ]
        listed = stub.ListConventions(lpb.ListConventionsRequest(tenant_id=t, project_id=pid)).conventions
        assert [c.origin for c in listed].count(lpb.CONVENTION_ORIGIN_INFERRED) == 5
        # Read once: a second holder gets the same section, not a second copy.
        assert _ask(stub, t, _claim(h.stub, t, "coder-2")).prompt_section == first
        again = stub.ListConventions(lpb.ListConventionsRequest(tenant_id=t, project_id=pid)).conventions
        assert len(again) == len(listed)
    finally:
        h.stop()
