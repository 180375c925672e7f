"""Webhooks, delivery logs, the event log and the SSE stream through the REST
gateway, with the whole chain real: ticketing's outbox relay -> events ->
a local HTTP receiver, verified with the standardwebhooks package."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from swarm_events.signing import swarm_signature
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, routes_tagged
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

pytestmark = BACKENDS

TAGS = {"webhooks", "events"}


def _project(client: httpx.Client, name: str = "p") -> dict[str, Any]:
    r = client.post("/api/projects", json={"name": name, "tickets": [{"key": "a", "name": "A"}]})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def tenant(mesh: Mesh) -> Iterator[httpx.Client]:
    mesh.app.state.settings.sse_keepalive_seconds = 0.2
    key = mesh.tenant_with_key(f"t-{uuid.uuid4().hex[:6]}")
    with mesh.as_key(key) as client:
        yield client


def test_webhook_lifecycle(mesh: Mesh, tenant: httpx.Client, receiver: Receiver) -> None:
    r = tenant.post(
        "/api/webhooks", json={"url": receiver.url, "events": ["ticket.created"], "description": "ci"}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    hook_id, secret = created["webhook"]["id"], created["secret"]
    assert secret.startswith("whsec_") and created["webhook"]["state"] == "active"
    assert secret.startswith(created["webhook"]["secret_prefix"].rstrip("…"))

    assert [w["id"] for w in tenant.get("/api/webhooks").json()["items"]] == [hook_id]
    assert tenant.get(f"/api/webhooks/{hook_id}").json()["events"] == ["ticket.created"]

    r = tenant.patch(f"/api/webhooks/{hook_id}", json={"events": ["*"], "state": "disabled"})
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["*"] and r.json()["state"] == "disabled"
    assert tenant.get("/api/webhooks", params={"state": "active"}).json()["items"] == []
    r = tenant.patch(f"/api/webhooks/{hook_id}", json={"state": "active"})
    assert r.json()["state"] == "active" and r.json()["description"] == "ci"
    assert tenant.patch(f"/api/webhooks/{hook_id}", json={}).status_code == 400

    rotated = tenant.post(f"/api/webhooks/{hook_id}/rotate-secret", json={"old_secret_grace_seconds": 60})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"] != secret
    expires = datetime.fromisoformat(rotated.json()["old_secret_expires_at"])
    assert timedelta(seconds=50) < expires - datetime.now(UTC) <= timedelta(seconds=60)

    assert tenant.delete(f"/api/webhooks/{hook_id}").status_code == 204
    assert tenant.get(f"/api/webhooks/{hook_id}").status_code == 404
    assert tenant.delete(f"/api/webhooks/{hook_id}").status_code == 404


def test_bad_webhooks_are_400_naming_the_field(tenant: httpx.Client) -> None:
    cases = [
        ({"url": "http://10.1.2.3/hook", "events": ["*"]}, "private address"),
        ({"url": "http://169.254.169.254/latest", "events": ["*"]}, "link-local"),
        ({"url": "ftp://example.test/x", "events": ["*"]}, "http"),
        ({"url": "http://127.0.0.1/x", "events": ["Not.A.Type!"]}, "event_types[0]"),
        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1/x"}, "events"),
    ]
    for body, fragment in cases:
        r = tenant.post("/api/webhooks", json=body)
        assert r.status_code in (400, 422), (body, r.status_code, r.text)
        assert fragment in r.text, (body, r.text)
    assert tenant.get("/api/webhooks").json()["items"] == []


def test_ticket_events_reach_a_webhook_signed_and_logged(
    mesh: Mesh, tenant: httpx.Client, receiver: Receiver
) -> None:
    created = tenant.post("/api/webhooks", json={"url": receiver.url, "events": ["ticket.created"]}).json()
    hook_id, secret = created["webhook"]["id"], created["secret"]
    project = _project(tenant)
    ticket_id = project["tickets"][0]["id"]
    receiver.wait_for(1)
    headers, body = receiver.received[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["event"] == "ticket.created" and payload["data"]["ticket_id"] == ticket_id
    assert headers["x-swarm-signature"] == swarm_signature(secret, body)

    logs = eventually(lambda: tenant.get(f"/api/webhooks/{hook_id}/logs").json()["items"], what="logs")
    assert logs[0]["outcome"] == "succeeded" and logs[0]["response_status_code"] == 200
    assert logs[0]["event_id"] == headers["webhook-id"]
    # The event log lists it too.
    events = tenant.get("/api/events", params={"types": "ticket.created"}).json()["items"]
    assert [e["id"] for e in events] == [headers["webhook-id"]]

    # Redeliver: the same event id again.
    r = tenant.post(f"/api/deliveries/{logs[0]['delivery_id']}/redeliver")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "pending" and r.json()["event_type"] == "ticket.created"
    receiver.wait_for(2)
    assert receiver.received[1][0]["webhook-id"] == headers["webhook-id"]

    # Test event.
    r = tenant.post(f"/api/webhooks/{hook_id}/test", json={"event_type": "ticket.completed"})
    assert r.status_code == 200, r.text
    assert r.json()["test"] is True and r.json()["outcome"] == "succeeded"
    receiver.wait_for(3)
    assert (
        Webhook(secret).verify(receiver.received[2][1], receiver.received[2][0])["event"]
        == "ticket.completed"
    )
    assert tenant.post(f"/api/webhooks/{hook_id}/test", json={"event_type": "NOPE"}).status_code == 400
    outcomes = tenant.get(f"/api/webhooks/{hook_id}/logs", params={"outcome": "succeeded"}).json()["items"]
    assert len(outcomes) == 3


def test_recover_after_the_receiver_was_down(mesh: Mesh, tenant: httpx.Client, receiver: Receiver) -> None:
    receiver.script = [(503, {}, 0.0)]
    hook_id = tenant.post("/api/webhooks", json={"url": receiver.url, "events": ["ticket.created"]}).json()[
        "webhook"
    ]["id"]
    since = datetime.now(UTC) - timedelta(seconds=5)
    _project(tenant)
    # The mesh retries twice, 50 ms apart, then gives the delivery up.
    eventually(lambda: len(tenant.get(f"/api/webhooks/{hook_id}/logs").json()["items"]) == 3)
    receiver.script = [(200, {}, 0.0)]
    r = tenant.post(f"/api/webhooks/{hook_id}/recover", json={"since": since.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json() == {"recovered_count": 1}
    receiver.wait_for(4)
    assert tenant.post(f"/api/webhooks/{hook_id}/recover", json={}).status_code == 422
    tenant.patch(f"/api/webhooks/{hook_id}", json={"state": "disabled"})
    r = tenant.post(f"/api/webhooks/{hook_id}/recover", json={"since": since.isoformat()})
    assert r.status_code == 409 and "disabled" in r.json()["error"]["message"]


class SSE:
    """Reads a text/event-stream response on a thread."""

    def __init__(self, client: httpx.Client, **kw: Any) -> None:
        self.frames: list[dict[str, str]] = []
        self.status = 0
        self.body = ""
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(client, kw), daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "stream did not open"

    def _read(self, client: httpx.Client, kw: dict[str, Any]) -> None:
        try:
            with client.stream("GET", "/api/events/stream", timeout=30, **kw) as r:
                self.status = r.status_code
                if r.status_code != 200:
                    self.body = r.read().decode()
                    self.ready.set()
                    return
                self.ready.set()
                frame: dict[str, str] = {}
                for line in r.iter_lines():  # keepalive comments come every 0.2 s
                    if self._stop.is_set():
                        return
                    if not line:
                        if "data" in frame:
                            self.frames.append(frame)
                        frame = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        frame[name] = value
        except (httpx.HTTPError, OSError):
            if not self._stop.is_set():
                raise

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(f["data"]) for f in self.frames if f.get("event") != "error"]

    def close(self) -> None:
        """Hang up, as a browser leaving the page would."""
        self._stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_sse_stream_is_live_filtered_tenant_scoped_and_resumable(mesh: Mesh, tenant: httpx.Client) -> None:
    other_key = mesh.tenant_with_key(f"o-{uuid.uuid4().hex[:6]}")
    with mesh.as_key(other_key) as other:
        mine = SSE(tenant, params={"types": ["ticket.created"]})
        theirs = SSE(other)
        assert mine.status == theirs.status == 200
        project = _project(tenant)
        ticket_id = project["tickets"][0]["id"]
        first = eventually(mine.events, what="the first event")[0]
        assert first["type"] == "ticket.created" and first["data"]["ticket_id"] == ticket_id
        assert mine.frames[0]["event"] == "ticket.created"
        # Another tenant sees nothing of it: its own later event is the
        # sentinel, and nothing of ours came before it.
        sentinel = _project(other, "theirs")["tickets"][0]["id"]
        eventually(lambda: sentinel in json.dumps(theirs.events()), what="the other tenant's own event")
        assert ticket_id not in json.dumps(theirs.events())
        mine.close()
        theirs.close()
        # Hanging up ends the backend stream too (its place is given back).
        eventually(lambda: mesh.events.feed._open == 0, timeout=10, what="backend stream closed")

        # Reconnecting with Last-Event-ID replays from that event's time.
        resumed = SSE(tenant, headers={"Last-Event-ID": mine.frames[0]["id"]})
        assert eventually(lambda: [e for e in resumed.events() if e["id"] == first["id"]])
        resumed.close()

        bad = SSE(tenant, params={"types": ["NOT A TYPE"]})
        assert bad.status == 400 and "types[0]" in bad.body
        bad_resume = SSE(tenant, headers={"Last-Event-ID": "garbage"})
        assert bad_resume.status == 400 and "Last-Event-ID" in bad_resume.body


def test_every_webhook_and_event_route_hides_other_tenants_objects(
    mesh: Mesh, tenant: httpx.Client, receiver: Receiver
) -> None:
    hook = tenant.post("/api/webhooks", json={"url": receiver.url, "events": ["*"], "description": "secret"})
    hook_id = hook.json()["webhook"]["id"]
    secret_ticket = _project(tenant, "secret-project")["tickets"][0]["id"]
    receiver.wait_for(1)
    delivery_id = eventually(lambda: tenant.get(f"/api/webhooks/{hook_id}/logs").json()["items"])[0][
        "delivery_id"
    ]
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    other_key = mesh.tenant_with_key(f"o-{uuid.uuid4().hex[:6]}")
    exercised: set[tuple[str, str]] = set()
    with mesh.as_key(other_key) as other:

        def call(method: str, route: str, path: str, **kw: Any) -> None:
            exercised.add((method, route))
            r = other.request(method, path, **kw)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
            assert r.json()["error"]["status"] == "NOT_FOUND"

        call("GET", "/api/webhooks/{webhook_id}", f"/api/webhooks/{hook_id}")
        call("PATCH", "/api/webhooks/{webhook_id}", f"/api/webhooks/{hook_id}", json={"state": "disabled"})
        call("DELETE", "/api/webhooks/{webhook_id}", f"/api/webhooks/{hook_id}")
        call("GET", "/api/webhooks/{webhook_id}/logs", f"/api/webhooks/{hook_id}/logs")
        call("POST", "/api/webhooks/{webhook_id}/test", f"/api/webhooks/{hook_id}/test")
        call("POST", "/api/webhooks/{webhook_id}/rotate-secret", f"/api/webhooks/{hook_id}/rotate-secret")
        call(
            "POST",
            "/api/webhooks/{webhook_id}/recover",
            f"/api/webhooks/{hook_id}/recover",
            json={"since": since},
        )
        call("POST", "/api/deliveries/{delivery_id}/redeliver", f"/api/deliveries/{delivery_id}/redeliver")

        exercised.add(("GET", "/api/webhooks"))
        assert other.get("/api/webhooks").json()["items"] == []
        exercised.add(("GET", "/api/events"))
        listed = other.get("/api/events").text
        assert "secret-project" not in listed and hook_id not in listed
        exercised.add(("POST", "/api/webhooks"))
        own = other.post("/api/webhooks", json={"url": receiver.url, "events": ["*"]})
        assert own.status_code == 201 and own.json()["webhook"]["id"] != hook_id
        exercised.add(("GET", "/api/event-types"))  # the same catalogue for every tenant
        assert other.get("/api/event-types").json() == tenant.get("/api/event-types").json()
        exercised.add(("GET", "/api/events/stream"))
        stream = SSE(other, params={"since": since})
        assert stream.status == 200
        # The replay since an hour ago comes before anything live, so the
        # tenant's own new event is the sentinel: nothing of A's precedes it.
        sentinel = _project(other, "sentinel")["tickets"][0]["id"]
        eventually(lambda: sentinel in json.dumps(stream.events()), what="the other tenant's own event")
        seen = json.dumps(stream.events())
        assert secret_ticket not in seen and hook_id not in seen and "secret-project" not in seen
        stream.close()

    # A's webhook is untouched by all of that.
    after = tenant.get(f"/api/webhooks/{hook_id}").json()
    assert after["state"] == "active" and after["secret_prefix"] == hook.json()["webhook"]["secret_prefix"]
    assert routes_tagged(mesh, TAGS) - exercised == set(), "routes not covered by the isolation walk"


def test_the_event_catalogue_lists_every_type_with_its_payload_schema(
    mesh: Mesh, tenant: httpx.Client, receiver: Receiver
) -> None:
    r = tenant.get("/api/event-types")
    assert r.status_code == 200, r.text
    items = {i["type"]: i for i in r.json()["items"]}
    seed = {name for name, i in items.items() if i["in_seed"]}
    assert seed == {
        "ticket.created", "ticket.assigned", "ticket.in_progress", "ticket.completed", "ticket.failed",
        "ticket.quarantined", "pr.opened", "pr.merged", "pr.rejected", "agent.started", "agent.completed",
        "agent.failed", "project.design_complete", "collaboration.stage_complete",
    }  # fmt: skip
    completed = items["ticket.completed"]["payload_schema"]
    assert completed["type"] == "object" and "ticket_id" in completed["required"]
    assert set(completed["properties"]["pull_request"]["required"]) >= {"merge_request_id", "branch"}
    # Every listed type may be subscribed to; anything else is 400 naming it.
    every = tenant.post("/api/webhooks", json={"url": receiver.url, "events": sorted(items)})
    assert every.status_code == 201, every.text
    typo = tenant.post("/api/webhooks", json={"url": receiver.url, "events": ["ticket.typo"]})
    assert typo.status_code == 400 and "ticket.typo" in typo.text
    assert len(tenant.get("/api/webhooks").json()["items"]) == 1
    assert mesh.http.get("/api/event-types").status_code == 401
