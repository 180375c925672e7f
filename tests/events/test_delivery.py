"""Webhook delivery to real local HTTP receivers: signed, retried, logged, disabled."""

from __future__ import annotations

import json

import grpc
from standardwebhooks.webhooks import Webhook

from swarm.events.v1 import events_pb2 as pb
from swarm_events.signing import swarm_signature
from tests.events.helpers import Live, attempts, hook, publish
from tests.support.harness import BACKENDS
from tests.support.receivers import Receiver
from tests.support.status import raises_status
from tests.support.waiting import eventually

pytestmark = BACKENDS


def test_subscribed_events_arrive_signed_and_verifiable(live: Live, receiver: Receiver) -> None:
    webhook_id, secret = hook(live, receiver.url, ["ticket.completed"])
    done = [publish(live, "acme", "ticket.completed", ticket_id=f"t{i}") for i in range(2)]
    publish(live, "acme", "ticket.created", ticket_id="t9")  # not subscribed
    publish(live, "other", "ticket.completed", ticket_id="x")  # another tenant
    # A sentinel published after them: whatever else was going to arrive is
    # due before it, on the same endpoint.
    sentinel = publish(live, "acme", "ticket.completed", ticket_id="t2")
    eventually(lambda: sentinel in [h["webhook-id"] for h, _ in receiver.received], what="the sentinel")
    assert sorted(h["webhook-id"] for h, _ in receiver.received) == sorted([*done, sentinel])
    for headers, body in receiver.received:
        payload = Webhook(secret).verify(body, headers)  # the independent verifier
        assert headers["x-swarm-signature"] == swarm_signature(secret, body)
        assert headers["x-swarm-event"] == "ticket.completed" == payload["event"]
        assert headers["webhook-id"] in [*done, sentinel]
        assert set(payload) == {"event", "timestamp", "data"}
    assert sorted(json.loads(b)["data"]["ticket_id"] for _, b in receiver.received) == ["t0", "t1", "t2"]
    eventually(lambda: len(attempts(live, webhook_id)) == 3)
    assert all(
        a.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED and a.response_status_code == 200
        for a in attempts(live, webhook_id)
    )


def test_failing_endpoint_is_retried_then_disabled_and_every_attempt_logged(
    live: Live, receiver: Receiver
) -> None:
    receiver.script = [(500, {}, 0.0), (500, {}, 0.0), (200, {}, 2.0)]  # two 500s, then timeouts
    webhook_id, _ = hook(live, receiver.url, ["*"])
    event_id = publish(live, "acme", "ticket.failed", ticket_id="t1")
    eventually(
        lambda: (
            live.stub.GetWebhook(pb.GetWebhookRequest(tenant_id="acme", webhook_id=webhook_id)).webhook.state
            == pb.WEBHOOK_STATE_DISABLED
        )
    )
    state = live.stub.GetWebhook(pb.GetWebhookRequest(tenant_id="acme", webhook_id=webhook_id)).webhook
    assert "failed for" in state.disabled_reason and state.consecutive_failure_count >= 3
    log = list(reversed(attempts(live, webhook_id)))
    assert [a.attempt_number for a in log] == list(range(1, len(log) + 1))
    assert [a.response_status_code for a in log[:2]] == [500, 500]
    assert all(a.outcome == pb.ATTEMPT_OUTCOME_FAILED for a in log)
    assert any("Timeout" in a.error for a in log[2:])
    assert {h["webhook-id"] for h, _ in receiver.received} == {event_id}  # the same id on every retry
    disabled = live.stub.ListEvents(pb.ListEventsRequest(tenant_id="acme", types=["webhook.disabled"])).events
    assert [e.data["webhook_id"] for e in disabled] == [webhook_id]


def test_410_gone_disables_the_endpoint_at_once(live: Live, receiver: Receiver) -> None:
    receiver.script = [(410, {}, 0.0)]
    webhook_id, _ = hook(live, receiver.url, ["*"])
    publish(live, "acme", "ticket.completed")
    eventually(
        lambda: (
            live.stub.GetWebhook(pb.GetWebhookRequest(tenant_id="acme", webhook_id=webhook_id)).webhook.state
            == pb.WEBHOOK_STATE_DISABLED
        )
    )
    assert len(attempts(live, webhook_id)) == 1
    reason = live.stub.GetWebhook(
        pb.GetWebhookRequest(tenant_id="acme", webhook_id=webhook_id)
    ).webhook.disabled_reason
    assert "410" in reason


def test_retry_after_is_honoured(live: Live, receiver: Receiver) -> None:
    receiver.script = [(503, {"Retry-After": "1"}, 0.0), (200, {}, 0.0)]
    webhook_id, _ = hook(live, receiver.url, ["*"])
    publish(live, "acme", "ticket.completed")
    receiver.wait_for(2)
    first = list(reversed(attempts(live, webhook_id)))[0]
    waited = first.next_retry_time.ToDatetime() - first.attempt_time.ToDatetime()
    assert waited.total_seconds() >= 1.0  # not the 0.05 s of the schedule
    eventually(lambda: attempts(live, webhook_id)[0].outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED)


def test_delivery_log_is_tenant_scoped(live: Live, receiver: Receiver) -> None:
    webhook_id, _ = hook(live, receiver.url, ["*"])
    with raises_status(grpc.StatusCode.NOT_FOUND, webhook_id):
        live.stub.ListDeliveryAttempts(
            pb.ListDeliveryAttemptsRequest(tenant_id="other", webhook_id=webhook_id)
        )


def test_during_rotation_deliveries_verify_with_old_and_new_secret(live: Live, receiver: Receiver) -> None:
    webhook_id, old = hook(live, receiver.url, ["*"])
    new = live.stub.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(tenant_id="acme", webhook_id=webhook_id)
    ).secret
    publish(live, "acme", "ticket.completed")
    receiver.wait_for(1)
    headers, body = receiver.received[0]
    for secret in (new, old):  # receivers not yet switched keep verifying
        Webhook(secret).verify(body, headers)
    assert headers["x-swarm-signature"] == swarm_signature(new, body)
