"""The rollout rules alone: sticky canary buckets, the rollback threshold,
the promotion threshold and the ladder."""

from __future__ import annotations

import uuid

import pytest

from swarm_ticketing.templates import (
    DEFAULT_LADDER,
    DeploymentStatus,
    OutcomeCause,
    bucket,
    judge,
    next_step,
    parse_ladder,
    status_at,
    takes_new_version,
)
from swarmcommon.errors import InvalidArgument

CANARY, ROLLING = DeploymentStatus.CANARY, DeploymentStatus.ROLLING
TICKETS = [str(uuid.UUID(int=i)) for i in range(2000)]


def share(deployment: str, percent: int, status: DeploymentStatus = CANARY) -> set[str]:
    return {t for t in TICKETS if takes_new_version(status, percent, deployment, t)}


def test_a_10_percent_canary_takes_10_percent_of_2000_tickets() -> None:
    for deployment in ("d-1", "d-2", "d-3"):
        assert 180 <= len(share(deployment, 10)) <= 220


def test_a_ticket_keeps_its_version_and_raising_the_share_only_adds_tickets() -> None:
    at_10 = share("d-1", 10)
    assert share("d-1", 10) == at_10  # every retry and stage attempt: the same answer
    at_25 = share("d-1", 25)
    assert at_10 < at_25, "nobody moves back to the stable version"
    assert {t for t in at_25 - at_10 if not 10 <= bucket("d-1", t) < 25} == set()
    assert share("d-1", 10, DeploymentStatus.ROLLBACK) == set()
    assert share("d-1", 10, DeploymentStatus.DISABLED) == set()
    assert share("d-1", 10, DeploymentStatus.FULL) == set(TICKETS)


def test_two_deployments_split_tickets_independently() -> None:
    both = share("d-1", 10) & share("d-2", 10)
    assert len(both) < 80, "the same tickets are not everyone's guinea pigs"


def _outcomes(sequence: str) -> list[tuple[int, int]]:
    """Counters after each outcome of 'SSF…'."""
    s = f = 0
    out = []
    for c in sequence:
        s, f = (s + 1, f) if c == "S" else (s, f + 1)
        out.append((s, f))
    return out


def _first_change(sequence: str, status: DeploymentStatus = CANARY, percent: int = 5) -> int | None:
    for i, (s, f) in enumerate(_outcomes(sequence)):
        if judge(status, percent, DEFAULT_LADDER, s, f).changed:
            return i + 1
    return None


def test_rollback_fires_at_the_first_outcome_with_10_attempts_and_over_30_percent() -> None:
    # 9 attempts at 4/9 = 44 %: too few; the 10th (5/10 = 50 %) rolls back.
    assert _first_change("SSSSSFFFF" + "F") == 10
    verdict = judge(CANARY, 5, DEFAULT_LADDER, 5, 5)
    assert verdict.status is DeploymentStatus.ROLLBACK
    assert verdict.reason == "Auto-rollback: 50.0% failure rate"
    # Exactly 30 % is not above 30 %: the next failure (4/11 = 36.4 %) is.
    assert _first_change("SSSSSSSFFF" + "F") == 11
    assert judge(ROLLING, 25, DEFAULT_LADDER, 7, 4).reason == "Auto-rollback: 36.4% failure rate"
    # A full or rolled-back deployment is not judged again.
    for status in (DeploymentStatus.FULL, DeploymentStatus.ROLLBACK, DeploymentStatus.DISABLED):
        assert not judge(status, 100, DEFAULT_LADDER, 0, 50).changed


def test_promotion_fires_at_the_20th_success_under_5_percent_failures() -> None:
    assert _first_change("S" * 19) is None
    assert _first_change("S" * 20) == 20
    verdict = judge(CANARY, 5, DEFAULT_LADDER, 20, 0)
    assert (verdict.status, verdict.rollout_percent) == (ROLLING, 25)
    assert _first_change("F" + "S" * 20) == 21  # 1/21 = 4.8 %
    # Two failures: promoted once they are under 5 %, at the 39th success (2/41).
    assert _first_change("FF" + "S" * 38) is None
    assert _first_change("FF" + "S" * 39) == 41
    # Only the first step is automatic.
    assert not judge(ROLLING, 25, DEFAULT_LADDER, 500, 0).changed
    assert not judge(CANARY, 10, DEFAULT_LADDER, 500, 0).changed  # not on the ladder's first step


def test_the_ladder_and_manual_steps() -> None:
    assert parse_ladder(None) == (5, 25, 50, 100)
    assert parse_ladder([10, 100]) == (10, 100)
    for bad in ([5, 5, 100], [0, 100], [5, 50], [50, 101]):
        with pytest.raises(InvalidArgument):
            parse_ladder(bad)
    assert next_step(5, DEFAULT_LADDER) == 25 and next_step(30, DEFAULT_LADDER) == 50
    with pytest.raises(InvalidArgument):
        next_step(100, DEFAULT_LADDER)
    assert [status_at(p, DEFAULT_LADDER) for p in (5, 25, 100)] == [CANARY, ROLLING, DeploymentStatus.FULL]


def test_only_outcomes_the_template_caused_count() -> None:
    counted = {c for c in OutcomeCause if c.counts}
    assert counted == {OutcomeCause.SUBMITTED, OutcomeCause.STAGE_FAILED, OutcomeCause.REVIEW_REJECTED}
    assert [c for c in OutcomeCause if c.success] == [OutcomeCause.SUBMITTED]
