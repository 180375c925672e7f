"""Webhook subscriptions, the SSRF guard, and signatures any receiver can verify."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_events.signing import secrets_in_use, signature_headers
from swarm_events.ssrf import parse_networks, resolve_allowed
from swarm_events.tables import webhooks
from swarmcommon.errors import InvalidArgument
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS
from tests.support.status import raises_status

LOOPBACK_OK = "127.0.0.0/8,::1/128"


@pytest.fixture
def stub(db: str) -> Iterator[tuple[pb_grpc.EventsServiceStub, events_server.Events]]:
    app = events_server.start(
        EventsSettings(database_url=db, listen_address="127.0.0.1:0", webhook_allow_networks=LOOPBACK_OK)
    )
    ch = channel(f"127.0.0.1:{app.port}")
    try:
        yield pb_grpc.EventsServiceStub(ch), app
    finally:
        ch.close()
        app.stop(grace=1)


@BACKENDS
def test_webhook_lifecycle_and_tenant_isolation(
    stub: tuple[pb_grpc.EventsServiceStub, events_server.Events],
) -> None:
    s, app = stub
    created = s.CreateWebhook(
        pb.CreateWebhookRequest(
            tenant_id="acme",
            url="http://127.0.0.1:9/hook",
            event_types=["ticket.completed", "*"],
            request_id="w1",
        )
    )
    assert created.secret.startswith("whsec_") and created.webhook.state == pb.WEBHOOK_STATE_ACTIVE
    assert created.webhook.secret_prefix == created.secret[:12]
    retry = s.CreateWebhook(
        pb.CreateWebhookRequest(
            tenant_id="acme",
            url="http://127.0.0.1:9/hook",
            event_types=["ticket.completed", "*"],
            request_id="w1",
        )
    )
    # The first answer again, secret included: the caller may never have seen it.
    assert retry.webhook.id == created.webhook.id and retry.secret == created.secret
    assert len(s.ListWebhooks(pb.ListWebhooksRequest(tenant_id="acme")).webhooks) == 1
    wid = created.webhook.id

    for call in [
        lambda: s.GetWebhook(pb.GetWebhookRequest(tenant_id="other", webhook_id=wid)),
        lambda: s.DeleteWebhook(pb.DeleteWebhookRequest(tenant_id="other", webhook_id=wid)),
        lambda: s.RotateWebhookSecret(pb.RotateWebhookSecretRequest(tenant_id="other", webhook_id=wid)),
        lambda: s.UpdateWebhook(
            pb.UpdateWebhookRequest(
                tenant_id="other",
                webhook=pb.Webhook(id=wid, description="x"),
                update_mask={"paths": ["description"]},
            )
        ),
    ]:
        with raises_status(grpc.StatusCode.NOT_FOUND, wid):
            call()
    assert s.ListWebhooks(pb.ListWebhooksRequest(tenant_id="other")).webhooks == []

    disabled = s.UpdateWebhook(
        pb.UpdateWebhookRequest(
            tenant_id="acme",
            webhook=pb.Webhook(id=wid, state=pb.WEBHOOK_STATE_DISABLED, description="paused"),
            update_mask={"paths": ["state", "description"]},
        )
    ).webhook
    assert disabled.state == pb.WEBHOOK_STATE_DISABLED and disabled.description == "paused"
    listed = s.ListWebhooks(
        pb.ListWebhooksRequest(tenant_id="acme", state=pb.WEBHOOK_STATE_DISABLED)
    ).webhooks
    assert [w.id for w in listed] == [wid]

    rotated = s.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(
            tenant_id="acme", webhook_id=wid, old_secret_grace_period=Duration(seconds=3600)
        )
    )
    assert rotated.secret != created.secret
    assert rotated.old_secret_expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) + timedelta(minutes=59)

    s.DeleteWebhook(pb.DeleteWebhookRequest(tenant_id="acme", webhook_id=wid))
    with raises_status(grpc.StatusCode.NOT_FOUND):
        s.GetWebhook(pb.GetWebhookRequest(tenant_id="acme", webhook_id=wid))


@BACKENDS
@pytest.mark.parametrize(
    ("url", "types", "fragment"),
    [
        pytest.param("ftp://example.com/x", ["*"], "http", id="scheme"),
        pytest.param("http:///nohost", ["*"], "http", id="no-host"),
        pytest.param("http://10.1.2.3/x", ["*"], "private address 10.1.2.3", id="private"),
        pytest.param("http://169.254.169.254/latest", ["*"], "169.254.169.254", id="metadata-service"),
        pytest.param("http://100.100.100.200/latest", ["*"], "100.100.100.200", id="cgnat-metadata-service"),
        pytest.param("http://0.0.0.0/x", ["*"], "0.0.0.0", id="unspecified"),
        pytest.param("http://224.0.0.1/x", ["*"], "multicast", id="multicast"),
        pytest.param("http://no-such-host.invalid/x", ["*"], "does not resolve", id="unresolvable"),
        pytest.param("http://127.0.0.1/x", [], "event_types", id="no-types"),
        pytest.param("http://127.0.0.1/x", ["Ticket Done"], "event_types[0]", id="bad-type"),
        # A typo once made a subscription that never fired.
        pytest.param(
            "http://127.0.0.1/x",
            ["ticket.completed", "ticket.typo"],
            "event_types[1]: no service emits 'ticket.typo'; ticket.* types are ticket.assigned",
            id="unknown-type",
        ),
        pytest.param(
            "http://127.0.0.1/x", ["order.created"], "no service emits 'order.created'", id="unknown-family"
        ),
    ],
)
def test_bad_webhooks_are_refused_and_nothing_is_stored(
    stub: tuple[pb_grpc.EventsServiceStub, events_server.Events], url: str, types: list[str], fragment: str
) -> None:
    s, app = stub
    with raises_status(grpc.StatusCode.INVALID_ARGUMENT, fragment):
        s.CreateWebhook(pb.CreateWebhookRequest(tenant_id="acme", url=url, event_types=types))
    with app.db.engine.connect() as conn:
        assert conn.execute(webhooks.select()).first() is None


def test_loopback_is_refused_unless_allow_listed() -> None:
    for url in ["http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]/x"]:
        with pytest.raises(InvalidArgument, match="loopback"):
            resolve_allowed(url, [])
        assert resolve_allowed(url, parse_networks(LOOPBACK_OK))


def test_the_previous_secret_signs_only_during_its_grace_period() -> None:
    now = datetime.now(UTC)
    assert secrets_in_use("new", "old", now + timedelta(seconds=1), now) == ["new", "old"]
    assert secrets_in_use("new", "old", now, now) == ["new"]
    assert secrets_in_use("new", None, None, now) == ["new"]


def test_signatures_verify_with_standard_webhooks_and_x_swarm_signature() -> None:
    current, previous = (
        "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_" + "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    )
    body = json.dumps(
        {"event": "ticket.completed", "timestamp": "2030-01-01T00:00:00Z", "data": {"ticket_id": "t1"}}
    )
    now = datetime.now(UTC)
    headers = signature_headers("evt-1", "ticket.completed", now, body, [current, previous])
    assert headers["webhook-id"] == "evt-1" and headers["X-Swarm-Event"] == "ticket.completed"
    # Either secret verifies during the rotation grace period...
    for secret in (current, previous):
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    # ...a stranger's does not, nor does a tampered body.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "aW52YWxpZGludmFsaWRpbnZhbGlkaW52YWxpZA==").verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(body.replace("t1", "t2"), headers)
    expected = "sha256=" + hmac.new(current.encode(), body.encode(), hashlib.sha256).hexdigest()
    assert headers["X-Swarm-Signature"] == expected
    stale = signature_headers("evt-1", "ticket.completed", now - timedelta(hours=1), body, [current])
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(body, stale)  # receivers reject replays outside the tolerance
