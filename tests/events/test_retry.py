"""The retry policy alone: no database, no network, a fixed clock and jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from swarm_events.domain import DeliveryStatus, Outcome
from swarm_events.retry import SVIX_SCHEDULE, RetryPolicy, decide, parse_schedule, retry_after_seconds

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(schedule=(5.0, 300.0, 1800.0), jitter=0.2, disable_after=timedelta(days=5))


def answer(status: int | None, retry_after: str | None = None, error: str | None = None) -> Outcome:
    return Outcome(status, "", False, error, retry_after, 12)


def no_jitter(low: float, high: float) -> float:
    return 1.0


def test_the_default_schedule_is_svix() -> None:
    assert RetryPolicy().schedule == SVIX_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert parse_schedule("5, 300,1800") == (5.0, 300.0, 1800.0)
    assert parse_schedule("") == ()


def test_a_2xx_succeeds_and_ends_the_failure_run() -> None:
    decision = decide(POLICY, 2, answer(204), NOW - timedelta(hours=1), NOW)
    assert decision.status == DeliveryStatus.SUCCEEDED
    assert decision.next_attempt_at is None and decision.failing_since is None
    assert decision.disable_reason is None


@pytest.mark.parametrize(
    ("attempt", "wait"),
    [
        pytest.param(1, 5.0, id="after-1st"),
        pytest.param(2, 300.0, id="after-2nd"),
        pytest.param(3, 1800.0, id="3rd"),
    ],
)
def test_failures_follow_the_schedule(attempt: int, wait: float) -> None:
    decision = decide(POLICY, attempt, answer(500), None, NOW, uniform=no_jitter)
    assert decision.status == DeliveryStatus.PENDING
    assert decision.next_attempt_at == NOW + timedelta(seconds=wait)
    assert decision.failing_since == NOW  # a new failure run starts now


def test_a_spent_schedule_fails_the_delivery_without_disabling() -> None:
    decision = decide(POLICY, 4, answer(None, error="ConnectError"), NOW - timedelta(hours=3), NOW)
    assert decision.status == DeliveryStatus.FAILED and decision.next_attempt_at is None
    assert decision.disable_reason is None and decision.failing_since == NOW - timedelta(hours=3)


def test_jitter_stays_within_its_bounds() -> None:
    asked: list[tuple[float, float]] = []

    def lowest(low: float, high: float) -> float:
        asked.append((low, high))
        return low

    decision = decide(POLICY, 2, answer(503), None, NOW, uniform=lowest)
    assert asked == [(0.8, 1.2)]
    assert decision.next_attempt_at == NOW + timedelta(seconds=240)


def test_retry_after_longer_than_the_wait_is_honoured() -> None:
    later = decide(POLICY, 1, answer(503, retry_after="120"), None, NOW, uniform=no_jitter)
    assert later.next_attempt_at == NOW + timedelta(seconds=120)
    sooner = decide(POLICY, 2, answer(503, retry_after="1"), None, NOW, uniform=no_jitter)
    assert sooner.next_attempt_at == NOW + timedelta(seconds=300)  # never sooner than the schedule
    dated = decide(
        POLICY, 1, answer(429, retry_after="Tue, 01 Jan 2030 12:10:00 GMT"), None, NOW, uniform=no_jitter
    )
    assert dated.next_attempt_at == NOW + timedelta(minutes=10)


def test_a_hostile_retry_after_is_capped_and_nonsense_is_ignored() -> None:
    huge = decide(POLICY, 1, answer(503, retry_after="9" * 40), None, NOW, uniform=no_jitter)
    assert huge.next_attempt_at == NOW + timedelta(days=1)
    junk = decide(POLICY, 1, answer(503, retry_after="soon, please"), None, NOW, uniform=no_jitter)
    assert junk.next_attempt_at == NOW + timedelta(seconds=5)
    assert retry_after_seconds("Tue, 01 Jan 2030 11:00:00 GMT", NOW) == 0.0  # a date in the past
    assert retry_after_seconds("  ", NOW) is None


def test_410_gone_disables_at_once() -> None:
    decision = decide(POLICY, 1, answer(410), None, NOW)
    assert decision.status == DeliveryStatus.FAILED
    assert decision.disable_reason == "the endpoint answered 410 Gone"


def test_an_endpoint_failing_for_the_whole_period_is_disabled() -> None:
    since = NOW - timedelta(days=5)
    decision = decide(POLICY, 1, answer(500), since, NOW)
    assert decision.status == DeliveryStatus.FAILED and decision.failing_since == since
    assert decision.disable_reason is not None and "failed for 5 days" in decision.disable_reason
    assert "2029-12-27T12:00:00Z" in decision.disable_reason
    almost = decide(POLICY, 1, answer(500), since + timedelta(seconds=1), NOW, uniform=no_jitter)
    assert almost.status == DeliveryStatus.PENDING and almost.disable_reason is None


def test_an_aborted_attempt_is_not_a_success() -> None:
    aborted = Outcome(200, "", False, "aborted", None, 1, aborted=True)
    assert not aborted.ok
