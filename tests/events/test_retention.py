"""Retention: the event log, finished deliveries, their attempts and old
request ids go after their retention period; pending deliveries (and the
events and attempts they still need) never do."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from swarm.events.v1 import events_pb2 as pb
from swarm_events.tables import deliveries, delivery_attempts, events
from swarmcommon.clock import ManualClock
from tests.events.helpers import Live, hook, publish, start_live
from tests.support.harness import BACKENDS
from tests.support.receivers import Receiver, serve_receiver

pytestmark = BACKENDS


def _drain(live: Live) -> None:
    """Run the dispatcher by hand until nothing is due."""
    while live.app.dispatcher.run_once():
        pass


def _ids(live: Live, column: sa.Column[str]) -> set[str]:
    with live.app.db.engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.select(column))}


def _delivery_states(live: Live) -> dict[tuple[str, str], str]:
    d = deliveries
    with live.app.db.engine.connect() as conn:
        rows = conn.execute(sa.select(d.c.event_id, d.c.webhook_id, d.c.status)).all()
    return {(r.event_id, r.webhook_id): r.status for r in rows}


def test_old_rows_go_and_recent_and_pending_ones_stay(db: str, receiver: Receiver) -> None:
    clock = ManualClock()
    live = start_live(
        db,
        clock=clock,
        dispatcher_workers=0,  # run by hand
        retention_interval_seconds=0,  # run by hand
        event_retention_days=30,
        delivery_retention_days=30,
        # One retry, ten years out: a failed first attempt stays pending, and
        # a failing endpoint is not disabled in the month the test skips.
        retry_schedule_seconds="315360000",
        disable_after_seconds=315360000,
    )
    try:
        with serve_receiver() as failing, serve_receiver() as gone:
            failing.script = [(500, {}, 0.0)]
            gone.script = [(410, {}, 0.0)]
            ok_hook, _ = hook(live, receiver.url, ["ticket.completed"])
            pending_hook, _ = hook(live, failing.url, ["ticket.completed"])
            hook(live, gone.url, ["ticket.completed"])
            old_rotation = live.stub.RotateWebhookSecret(
                pb.RotateWebhookSecretRequest(tenant_id="acme", webhook_id=ok_hook, request_id="rotate-old")
            )

            old = publish(live, "acme", "ticket.completed")  # succeeded, pending, failed (410)
            old_unwatched = publish(live, "nobody", "ticket.completed")  # no deliveries at all
            _drain(live)
            assert sorted(_delivery_states(live).values()) == ["failed", "pending", "succeeded"]

            clock.advance(timedelta(days=31))
            new = publish(live, "acme", "ticket.completed")
            _drain(live)
            old_attempts = _ids(live, delivery_attempts.c.id)

            while live.app.retention.run_once():
                pass

            # The old event without live deliveries is gone; the one a pending
            # delivery still needs stays, as does the recent one.
            kept_events = _ids(live, events.c.event_id)
            assert old_unwatched not in kept_events
            assert {old, new} <= kept_events
            assert _delivery_states(live) == {
                (old, pending_hook): "pending",
                (new, ok_hook): "succeeded",
                (new, pending_hook): "pending",
            }
            with live.app.db.engine.connect() as conn:
                kept = conn.execute(
                    sa.select(delivery_attempts.c.event_id, delivery_attempts.c.webhook_id)
                ).all()
            # The pending delivery's old attempt stays with it; the finished ones' went.
            assert sorted((r.event_id, r.webhook_id) for r in kept) == sorted(
                [(old, pending_hook), (new, ok_hook), (new, pending_hook)]
            )
            assert len(old_attempts) == 5

            # Old request ids are forgotten: the same id is a new rotation now.
            again = live.stub.RotateWebhookSecret(
                pb.RotateWebhookSecretRequest(tenant_id="acme", webhook_id=ok_hook, request_id="rotate-old")
            )
            assert again.secret != old_rotation.secret
    finally:
        live.stop()
