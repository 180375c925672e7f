"""A batch of attempts is recorded in a few statements (not three per
attempt): what it leaves behind must be what recording them one by one did —
each delivery's state, one log row per attempt, and the webhook's failure run
as if the outcomes had come in order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from swarm_events.domain import DeliveryStatus, Outcome
from swarm_events.retry import Decision
from swarm_events.stores.attempts import Recorded
from swarm_events.tables import webhooks
from tests.events.helpers import Live, attempts, hook, publish, start_live
from tests.support.harness import BACKENDS

pytestmark = BACKENDS

SINCE = datetime(2030, 1, 1, 12, 0).astimezone()


@pytest.fixture
def idle(db: str) -> Iterator[Live]:
    """An events server whose dispatcher sends nothing: the test records by hand."""
    live = start_live(db, dispatcher_workers=0)
    yield live
    live.stop()


def _outcome(status: int) -> Outcome:
    return Outcome(status_code=status, body="", truncated=False, error=None, retry_after=None, duration_ms=3)


def _decision(ok: bool, since: datetime | None) -> Decision:
    if ok:
        return Decision(DeliveryStatus.SUCCEEDED, None, None)
    return Decision(DeliveryStatus.PENDING, SINCE + timedelta(minutes=5), since)


def _run(live: Live, webhook_id: str, statuses: list[int]) -> dict[str, object]:
    claimed = live.app.deliveries.claim(webhook_id, len(statuses), timedelta(minutes=1))
    assert len(claimed) == len(statuses)
    now = live.app.dispatcher.clock.now()
    results = [
        Recorded(c, _outcome(s), _decision(200 <= s < 300, SINCE), now)
        for c, s in zip(claimed, statuses, strict=True)
    ]
    assert live.app.attempts.record(results) == []
    with live.app.db.engine.connect() as conn:
        row = conn.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id)).one()
    return dict(row._mapping)


def test_a_batch_leaves_the_failure_run_of_its_outcomes_in_order(idle: Live) -> None:
    webhook_id, _ = hook(idle, "http://127.0.0.1:9/hook", ["*"])
    for i in range(9):
        publish(idle, "acme", "ticket.completed", n=str(i))

    after = _run(idle, webhook_id, [500, 500])  # a run of two failures starts
    assert after["consecutive_failures"] == 2 and after["failing_since"] is not None
    assert after["last_success_at"] is None and after["last_failure_at"] is not None

    after = _run(idle, webhook_id, [503])  # extends it
    assert after["consecutive_failures"] == 3

    after = _run(idle, webhook_id, [500, 200, 500, 502])  # a success ends it; two failures after
    assert after["consecutive_failures"] == 2
    assert after["last_success_at"] is not None and after["failing_since"] is not None

    after = _run(idle, webhook_id, [500, 204])  # ends with a success: no run
    assert after["consecutive_failures"] == 0 and after["failing_since"] is None

    log = attempts(idle, webhook_id)
    assert len(log) == 9
    sent = [500, 500, 503, 500, 200, 500, 502, 500, 204]
    assert sorted(a.response_status_code for a in log) == sorted(sent)
    states = idle.app.deliveries.claim(webhook_id, 10, timedelta(minutes=1))
    assert states == [], "retries are due later; successes are done: nothing is claimable now"
