"""Test sends, redelivery, recovery and the delivery log's filters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from standardwebhooks.webhooks import Webhook

from swarm.events.v1 import events_pb2 as pb
from swarm_events.signing import swarm_signature
from tests.events.helpers import Live, attempts, get_webhook, hook, publish, start_live
from tests.support.harness import BACKENDS
from tests.support.receivers import Receiver
from tests.support.status import raises_status
from tests.support.waiting import eventually

pytestmark = BACKENDS


@pytest.fixture
def live(db: str) -> Iterator[Live]:
    app = start_live(db)
    yield app
    app.stop()


def _disable(live: Live, webhook_id: str) -> None:
    live.stub.UpdateWebhook(
        pb.UpdateWebhookRequest(
            tenant_id="acme",
            webhook=pb.Webhook(id=webhook_id, state=pb.WEBHOOK_STATE_DISABLED),
            update_mask={"paths": ["state"]},
        )
    )


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


# -- test sends -----------------------------------------------------------------------------


def test_test_event_is_signed_logged_and_leaves_the_failure_run_alone(live: Live, receiver: Receiver) -> None:
    webhook_id, secret = hook(live, receiver.url, ["ticket.completed"])
    reply = live.stub.SendTestEvent(pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id))
    assert reply.attempt.test and reply.attempt.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert reply.attempt.response_status_code == 200 and reply.attempt.delivery_id == ""
    headers, body = receiver.received[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["event"] == "webhook.test" and payload["data"]["webhook_id"] == webhook_id
    assert headers["x-swarm-signature"] == swarm_signature(secret, body)
    assert [a.id for a in attempts(live, webhook_id)] == [reply.attempt.id]

    # A failing test send is logged with its status but is not a delivery failure.
    receiver.script = [(500, {}, 0.0)]
    failed = live.stub.SendTestEvent(
        pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id, event_type="ticket.completed")
    ).attempt
    assert failed.outcome == pb.ATTEMPT_OUTCOME_FAILED and failed.response_status_code == 500
    assert receiver.received[1][0]["x-swarm-event"] == "ticket.completed"
    hook_now = get_webhook(live, webhook_id)
    assert hook_now.consecutive_failure_count == 0 and hook_now.state == pb.WEBHOOK_STATE_ACTIVE


def test_test_event_reaches_a_disabled_webhook(live: Live, receiver: Receiver) -> None:
    webhook_id, _ = hook(live, receiver.url, ["*"])
    _disable(live, webhook_id)
    reply = live.stub.SendTestEvent(pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id))
    assert reply.attempt.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
    assert len(receiver.received) == 1


def test_test_event_bad_input_and_other_tenants(live: Live, receiver: Receiver) -> None:
    webhook_id, _ = hook(live, receiver.url, ["*"])
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "event_type"):
        live.stub.SendTestEvent(
            pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id, event_type="Not A Type")
        )
    with raises_status(grpc.StatusCode.NOT_FOUND, webhook_id):
        live.stub.SendTestEvent(pb.SendTestEventRequest(tenant_id="other", webhook_id=webhook_id))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "webhook_id"):
        live.stub.SendTestEvent(pb.SendTestEventRequest(tenant_id="acme", webhook_id="nope"))
    assert receiver.received == [] and attempts(live, webhook_id) == []


# -- redelivery and recovery ----------------------------------------------------------------


def test_redelivery_sends_the_same_event_id_again(live: Live, receiver: Receiver) -> None:
    webhook_id, secret = hook(live, receiver.url, ["*"])
    event_id = publish(live, "acme", "ticket.completed", ticket_id="t1")
    receiver.wait_for(1)
    eventually(lambda: len(attempts(live, webhook_id)) == 1)
    delivery_id = attempts(live, webhook_id)[0].delivery_id

    with raises_status(grpc.StatusCode.NOT_FOUND, delivery_id):
        live.stub.RedeliverDelivery(pb.RedeliverDeliveryRequest(tenant_id="other", delivery_id=delivery_id))
    delivery = live.stub.RedeliverDelivery(
        pb.RedeliverDeliveryRequest(tenant_id="acme", delivery_id=delivery_id)
    ).delivery
    assert delivery.state == pb.DELIVERY_STATE_PENDING and delivery.event_type == "ticket.completed"
    assert delivery.event_id == event_id and delivery.HasField("next_attempt_time")

    receiver.wait_for(2)
    assert [h["webhook-id"] for h, _ in receiver.received] == [event_id, event_id]
    Webhook(secret).verify(receiver.received[1][1], receiver.received[1][0])
    eventually(lambda: len(attempts(live, webhook_id)) == 2)
    assert [a.attempt_number for a in attempts(live, webhook_id)] == [2, 1]  # the count continues

    _disable(live, webhook_id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "disabled"):
        live.stub.RedeliverDelivery(pb.RedeliverDeliveryRequest(tenant_id="acme", delivery_id=delivery_id))


def test_redelivery_wakes_an_idle_dispatcher(db: str, receiver: Receiver) -> None:
    """A dispatcher that found nothing to do polls again only after its
    interval; a redelivery must not wait for it (a retried RedeliverDelivery
    used to sit out the whole quiet interval)."""
    live = start_live(db, dispatcher_poll_seconds=60.0)
    try:
        webhook_id, _ = hook(live, receiver.url, ["*"])
        event_id = publish(live, "acme", "ticket.completed")  # a publish wakes it
        receiver.wait_for(1)
        delivery_id = eventually(lambda: attempts(live, webhook_id)).pop().delivery_id
        live.stub.RedeliverDelivery(pb.RedeliverDeliveryRequest(tenant_id="acme", delivery_id=delivery_id))
        receiver.wait_for(2, timeout=10)  # far sooner than the 60 s poll
        assert [h["webhook-id"] for h, _ in receiver.received] == [event_id, event_id]
    finally:
        live.stop()


def test_recover_requeues_failed_deliveries_since_a_time(live: Live, receiver: Receiver) -> None:
    receiver.script = [(500, {}, 0.0)]
    webhook_id, _ = hook(live, receiver.url, ["*"])
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = [publish(live, "acme", "ticket.failed", n=str(i)) for i in range(3)]
    # 1 try + 2 retries each, then the deliveries are given up: the log plans no 4th.
    eventually(lambda: len(attempts(live, webhook_id)) == 9)
    assert [a.attempt_number for a in attempts(live, webhook_id) if not a.HasField("next_retry_time")] == [
        3
    ] * 3
    # A sentinel on the same endpoint, answered 200: a 4th try of any of the
    # three would be due before it and is sent before it.
    receiver.script = [(500, {}, 0.0)] * 9 + [(200, {}, 0.0)]
    sentinel = publish(live, "acme", "ticket.completed")
    eventually(lambda: sentinel in [h["webhook-id"] for h, _ in receiver.received], what="the sentinel")
    sent = [h["webhook-id"] for h, _ in receiver.received]
    assert sorted(sent[:9]) == sorted(ids * 3) and sent[9:] == [sentinel]

    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "start_time"):
        live.stub.RecoverFailedDeliveries(
            pb.RecoverFailedDeliveriesRequest(tenant_id="acme", webhook_id=webhook_id)
        )
    with raises_status(grpc.StatusCode.NOT_FOUND, webhook_id):
        live.stub.RecoverFailedDeliveries(
            pb.RecoverFailedDeliveriesRequest(
                tenant_id="other", webhook_id=webhook_id, start_time=_ts(before)
            )
        )
    # Nothing failed after "now": nothing to recover.
    later = live.stub.RecoverFailedDeliveries(
        pb.RecoverFailedDeliveriesRequest(
            tenant_id="acme", webhook_id=webhook_id, start_time=_ts(datetime.now(UTC) + timedelta(hours=1))
        )
    )
    assert later.recovered_count == 0

    receiver.script = [(200, {}, 0.0)]
    receiver.received.clear()
    recovered = live.stub.RecoverFailedDeliveries(
        pb.RecoverFailedDeliveriesRequest(tenant_id="acme", webhook_id=webhook_id, start_time=_ts(before))
    )
    assert recovered.recovered_count == 3
    receiver.wait_for(3)
    assert sorted(h["webhook-id"] for h, _ in receiver.received) == sorted(ids)
    eventually(
        lambda: (
            sorted(
                a.event_id for a in attempts(live, webhook_id) if a.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED
            )
            == sorted([*ids, sentinel])
        )
    )

    _disable(live, webhook_id)
    with raises_status(grpc.StatusCode.FAILED_PRECONDITION, "disabled"):
        live.stub.RecoverFailedDeliveries(
            pb.RecoverFailedDeliveriesRequest(tenant_id="acme", webhook_id=webhook_id, start_time=_ts(before))
        )


def test_delivery_log_filters(live: Live, receiver: Receiver) -> None:
    receiver.script = [(500, {}, 0.0), (200, {}, 0.0)]
    webhook_id, _ = hook(live, receiver.url, ["*"])
    first = publish(live, "acme", "ticket.completed")
    eventually(lambda: len(attempts(live, webhook_id)) == 2)
    second = publish(live, "acme", "ticket.completed")
    eventually(lambda: len(attempts(live, webhook_id)) == 3)

    def log(**kw: Any) -> list[pb.DeliveryAttempt]:
        req = pb.ListDeliveryAttemptsRequest(tenant_id="acme", webhook_id=webhook_id, **kw)
        return list(live.stub.ListDeliveryAttempts(req).attempts)

    assert [a.event_id for a in log(event_id=first)] == [first, first]
    assert [a.event_id for a in log(event_id=second)] == [second]
    assert [a.response_status_code for a in log(outcome=pb.ATTEMPT_OUTCOME_FAILED)] == [500]
    assert len(log(outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED)) == 2
    delivery_id = log(event_id=second)[0].delivery_id
    assert [a.delivery_id for a in log(delivery_id=delivery_id)] == [delivery_id]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "outcome"):
        log(outcome=7)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "event_id"):
        log(event_id="x")
