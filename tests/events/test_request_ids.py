"""AIP-155 on every mutating events call: a retry with the same request_id
returns the first answer and writes nothing; the same id for a different
request is INVALID_ARGUMENT and writes nothing either."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from swarm.events.v1 import events_pb2 as pb
from swarmcommon.clock import ManualClock
from tests.events.helpers import Live, attempts, hook, publish, snapshot, start_live
from tests.support.harness import BACKENDS
from tests.support.receivers import Receiver
from tests.support.status import raises_status

pytestmark = BACKENDS


@dataclass
class Manual:
    live: Live
    clock: ManualClock

    def later(self) -> None:
        """A retry comes a little later: anything it rewrote would change."""
        self.clock.advance(timedelta(seconds=7))

    def drain(self) -> None:
        while self.live.app.dispatcher.run_once():
            pass


@pytest.fixture
def manual(db: str) -> Iterator[Manual]:
    """Delivery run by hand on a manual clock, so the database holds still between calls."""
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    live = start_live(db, clock=clock, dispatcher_workers=0, retry_schedule_seconds="")
    try:
        yield Manual(live, clock)
    finally:
        live.stop()


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def test_create_webhook_retry_returns_the_same_webhook_and_secret(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    request = pb.CreateWebhookRequest(
        tenant_id="acme", url=receiver.url, event_types=["ticket.completed"], request_id="create-1"
    )
    first = s.CreateWebhook(request)
    before = snapshot(manual.live)
    manual.later()
    again = s.CreateWebhook(request)
    assert again == first and again.secret.startswith("whsec_")
    assert snapshot(manual.live) == before
    other = pb.CreateWebhookRequest(
        tenant_id="acme", url=receiver.url + "/other", event_types=["ticket.completed"], request_id="create-1"
    )
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id", "create-1"):
        s.CreateWebhook(other)
    assert snapshot(manual.live) == before
    # Request ids are per tenant: another tenant's same id is its own request.
    theirs = s.CreateWebhook(
        pb.CreateWebhookRequest(tenant_id="other", url=receiver.url, event_types=["*"], request_id="create-1")
    )
    assert theirs.webhook.id != first.webhook.id


def test_update_webhook_retry_returns_the_first_answer(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    webhook_id, _ = hook(manual.live, receiver.url, ["*"])
    request = pb.UpdateWebhookRequest(
        tenant_id="acme",
        webhook=pb.Webhook(id=webhook_id, description="first"),
        update_mask={"paths": ["description"]},
        request_id="update-1",
    )
    manual.later()
    first = s.UpdateWebhook(request)
    before = snapshot(manual.live)
    manual.later()
    again = s.UpdateWebhook(request)
    assert again == first and again.webhook.description == "first"
    assert snapshot(manual.live) == before
    request.webhook.description = "second"
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        s.UpdateWebhook(request)
    assert snapshot(manual.live) == before


def test_delete_webhook_retry_succeeds_again(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    webhook_id, _ = hook(manual.live, receiver.url, ["*"])
    request = pb.DeleteWebhookRequest(tenant_id="acme", webhook_id=webhook_id, request_id="delete-1")
    s.DeleteWebhook(request)
    before = snapshot(manual.live)
    manual.later()
    assert s.DeleteWebhook(request) == pb.DeleteWebhookResponse()  # not NOT_FOUND
    assert snapshot(manual.live) == before
    with raises_status(grpc.StatusCode.NOT_FOUND):  # without a request id it is gone
        s.DeleteWebhook(pb.DeleteWebhookRequest(tenant_id="acme", webhook_id=webhook_id))


def test_rotate_secret_retry_returns_the_same_new_secret(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    webhook_id, original = hook(manual.live, receiver.url, ["*"])
    request = pb.RotateWebhookSecretRequest(
        tenant_id="acme",
        webhook_id=webhook_id,
        old_secret_grace_period=Duration(seconds=60),
        request_id="rot-1",
    )
    first = s.RotateWebhookSecret(request)
    before = snapshot(manual.live)
    manual.later()
    again = s.RotateWebhookSecret(request)
    assert again == first and again.secret != original
    assert snapshot(manual.live) == before
    # The secret the retry returned is the one deliveries are signed with.
    assert (
        s.GetWebhook(pb.GetWebhookRequest(tenant_id="acme", webhook_id=webhook_id)).webhook.secret_prefix
        == again.secret[:12]
    )
    request.old_secret_grace_period.seconds = 120
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        s.RotateWebhookSecret(request)
    assert snapshot(manual.live) == before


def test_send_test_event_retry_returns_the_first_attempt_and_sends_nothing(
    manual: Manual, receiver: Receiver
) -> None:
    s = manual.live.stub
    webhook_id, _ = hook(manual.live, receiver.url, ["*"])
    request = pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id, request_id="test-1")
    first = s.SendTestEvent(request)
    before = snapshot(manual.live)
    manual.later()
    again = s.SendTestEvent(request)
    assert again == first
    assert snapshot(manual.live) == before
    # A new request id is a new send: it arrives, and it is the only other one.
    sentinel = s.SendTestEvent(
        pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id, request_id="t-2")
    )
    assert [h["webhook-id"] for h, _ in receiver.received] == [
        first.attempt.event_id,
        sentinel.attempt.event_id,
    ]
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        s.SendTestEvent(
            pb.SendTestEventRequest(
                tenant_id="acme", webhook_id=webhook_id, event_type="ticket.failed", request_id="test-1"
            )
        )
    assert len(receiver.received) == 2


def test_redeliver_retry_returns_the_first_answer_and_sends_once(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    webhook_id, _ = hook(manual.live, receiver.url, ["*"])
    event_id = publish(manual.live, "acme", "ticket.completed")
    manual.drain()
    delivery_id = attempts(manual.live, webhook_id)[0].delivery_id
    request = pb.RedeliverDeliveryRequest(tenant_id="acme", delivery_id=delivery_id, request_id="redeliver-1")
    manual.later()
    first = s.RedeliverDelivery(request)
    assert first.delivery.state == pb.DELIVERY_STATE_PENDING
    before = snapshot(manual.live)
    manual.later()
    again = s.RedeliverDelivery(request)
    assert again == first
    assert snapshot(manual.live) == before
    manual.drain()
    assert [h["webhook-id"] for h, _ in receiver.received] == [event_id, event_id]  # sent again once
    manual.later()
    assert s.RedeliverDelivery(request) == first  # even after it was delivered
    manual.drain()
    assert len(receiver.received) == 2


def test_recover_retry_returns_the_first_count(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    receiver.script = [(500, {}, 0.0)]
    webhook_id, _ = hook(manual.live, receiver.url, ["*"])
    since = manual.clock.now() - timedelta(minutes=1)
    for i in range(2):
        publish(manual.live, "acme", "ticket.failed", n=str(i))
    manual.drain()  # no retries configured: both fail at once
    request = pb.RecoverFailedDeliveriesRequest(
        tenant_id="acme", webhook_id=webhook_id, start_time=_ts(since), request_id="recover-1"
    )
    manual.later()
    first = s.RecoverFailedDeliveries(request)
    assert first.recovered_count == 2
    before = snapshot(manual.live)
    manual.later()
    assert s.RecoverFailedDeliveries(request) == first
    assert snapshot(manual.live) == before
    request.start_time.CopyFrom(_ts(since - timedelta(hours=1)))
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        s.RecoverFailedDeliveries(request)
    assert snapshot(manual.live) == before


def test_a_request_id_used_for_another_call_is_refused(manual: Manual, receiver: Receiver) -> None:
    s = manual.live.stub
    webhook_id, _ = hook(manual.live, receiver.url, ["*"])
    s.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(tenant_id="acme", webhook_id=webhook_id, request_id="r")
    )
    before = snapshot(manual.live)
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, "request_id"):
        s.DeleteWebhook(pb.DeleteWebhookRequest(tenant_id="acme", webhook_id=webhook_id, request_id="r"))
    assert snapshot(manual.live) == before
