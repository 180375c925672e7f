"""Test sends, redelivery, recovery, the live stream, and the connect-time SSRF pin."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from standardwebhooks.webhooks import Webhook

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_events.signing import swarm_signature
from swarmcommon.grpcclient import channel, raw_channel, trace_metadata
from tests.events.helpers import Live, attempts, hook, publish
from tests.support.harness import BACKENDS
from tests.support.receivers import Receiver
from tests.support.status import raises_status
from tests.support.waiting import eventually

pytestmark = BACKENDS


def _start(db: str, **overrides: Any) -> Live:
    settings: dict[str, Any] = {
        "database_url": db,
        "listen_address": "127.0.0.1:0",
        "webhook_allow_networks": "127.0.0.0/8",
        "retry_schedule_seconds": "0.05,0.05",
        "retry_jitter": 0,
        "delivery_timeout_seconds": 1.0,
        "dispatcher_poll_seconds": 0.02,
        "stream_poll_seconds": 0.1,
    }
    app = events_server.start(EventsSettings(**{**settings, **overrides}))
    return Live(app, pb_grpc.EventsServiceStub(channel(f"127.0.0.1:{app.port}")))


@pytest.fixture
def live(db: str) -> Iterator[Live]:
    app = _start(db)
    yield app
    app.app.stop(grace=1)


def _get(live: Live, webhook_id: str, tenant_id: str = "acme") -> pb.Webhook:
    return live.stub.GetWebhook(pb.GetWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id)).webhook


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
    hook_now = _get(live, webhook_id)
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


def test_recover_requeues_failed_deliveries_since_a_time(live: Live, receiver: Receiver) -> None:
    receiver.script = [(500, {}, 0.0)]
    webhook_id, _ = hook(live, receiver.url, ["*"])
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = [publish(live, "acme", "ticket.failed", n=str(i)) for i in range(3)]
    # 1 try + 2 retries each, then the deliveries are given up.
    eventually(lambda: len(attempts(live, webhook_id)) == 9)
    time.sleep(0.2)
    assert len(receiver.received) == 9

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
        lambda: sum(a.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED for a in attempts(live, webhook_id)) == 3
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


# -- live stream --------------------------------------------------------------------------


class Follower:
    """Reads a StreamEvents call on a thread, collecting events."""

    def __init__(self, live: Live, request: pb.StreamEventsRequest) -> None:
        stub = pb_grpc.EventsServiceStub(raw_channel(f"127.0.0.1:{live.app.port}"))
        self.call = stub.StreamEvents(request, metadata=trace_metadata())
        self.events: list[pb.Event] = []
        self.error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for reply in self.call:
                self.events.append(reply.event)
        except grpc.RpcError as exc:
            self.error = exc

    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(timeout=5)


def test_stream_delivers_the_tenants_live_events_of_the_asked_types(live: Live) -> None:
    follower = Follower(live, pb.StreamEventsRequest(tenant_id="acme", types=["ticket.completed"]))
    try:
        time.sleep(0.3)  # the stream is open
        wanted = [publish(live, "acme", "ticket.completed", n=str(i)) for i in range(3)]
        publish(live, "acme", "ticket.created")  # another type
        publish(live, "other", "ticket.completed")  # another tenant
        eventually(lambda: len(follower.events) >= 3, timeout=5)
        time.sleep(0.3)
        assert follower.ids() == wanted  # in arrival order, each once
        assert all(e.tenant_id == "acme" for e in follower.events)
    finally:
        follower.close()


def test_stream_replays_from_a_start_time_then_goes_live(live: Live) -> None:
    old = [publish(live, "acme", "ticket.completed", n=str(i)) for i in range(2)]
    start = datetime.now(UTC) - timedelta(minutes=1)
    follower = Follower(live, pb.StreamEventsRequest(tenant_id="acme", start_time=_ts(start)))
    try:
        eventually(lambda: len(follower.events) >= 2, timeout=5)
        new = publish(live, "acme", "agent.failed")
        eventually(lambda: len(follower.events) >= 3, timeout=5)
        time.sleep(0.3)
        assert follower.ids() == [*old, new]
    finally:
        follower.close()


def test_stream_sees_events_published_through_another_replica(db: str) -> None:
    a, b = _start(db), _start(db)
    follower = Follower(a, pb.StreamEventsRequest(tenant_id="acme"))
    try:
        time.sleep(0.3)
        ids = [publish(b, "acme", "ticket.completed", n=str(i)) for i in range(5)]
        eventually(lambda: len(follower.events) >= 5, timeout=5)
        assert sorted(follower.ids()) == sorted(ids)
    finally:
        follower.close()
        a.app.stop(grace=1)
        b.app.stop(grace=1)


def test_stream_limits_and_bad_input(db: str) -> None:
    live = _start(db, max_streams=1)
    first = Follower(live, pb.StreamEventsRequest(tenant_id="acme"))
    try:
        time.sleep(0.3)
        second = Follower(live, pb.StreamEventsRequest(tenant_id="acme"))
        second.thread.join(timeout=5)
        assert second.error is not None and second.error.code() == grpc.StatusCode.UNAVAILABLE
        bad = Follower(live, pb.StreamEventsRequest(tenant_id="acme", types=["NOPE"]))
        bad.thread.join(timeout=5)
        assert bad.error is not None and bad.error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "types[0]" in (bad.error.details() or "")
    finally:
        first.close()
    # Stopping the server ends open streams instead of waiting on them.
    third = Follower(live, pb.StreamEventsRequest(tenant_id="acme"))
    time.sleep(0.3)
    started = time.monotonic()
    live.app.stop(grace=5)
    third.thread.join(timeout=5)
    assert not third.thread.is_alive() and time.monotonic() - started < 4


# -- SSRF: the checked address is the one connected to -------------------------------------


def test_delivery_connects_to_the_address_that_passed_the_check(
    db: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name first resolves to the allowed receiver, then to
    another loopback address outside the allow-list (nobody listens there).
    The request must still go to the first answer, with the original Host."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"] * 2 + ["127.0.0.2"] * 1000)  # create (1) + send-time check (1)

    def rebinding(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "hooks.rebind.test":
            return real(next(answers), *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    live = _start(db, webhook_allow_networks="127.0.0.1/32")
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        webhook_id, secret = hook(live, f"http://hooks.rebind.test:{port}/hooks/swarm", ["*"])
        publish(live, "acme", "ticket.completed")
        receiver.wait_for(1)
        headers, body = receiver.received[0]
        assert headers["host"] == f"hooks.rebind.test:{port}"
        Webhook(secret).verify(body, headers)
        assert json.loads(body)["event"] == "ticket.completed"
        # The next send resolves to 127.0.0.2, outside the allow-list: refused, not sent.
        publish(live, "acme", "ticket.completed")
        eventually(lambda: len(attempts(live, webhook_id)) >= 2)
        blocked = attempts(live, webhook_id)[0]
        assert blocked.outcome == pb.ATTEMPT_OUTCOME_FAILED and "127.0.0.2" in blocked.error
        assert len(receiver.received) == 1
    finally:
        live.app.stop(grace=1)
