"""Creates are idempotent even when the caller sends no Idempotency-Key: the
gateway gives each HTTP request one request_id, so the channel retrying a
call whose answer was lost (after the backend committed) changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, lossy_proxy

pytestmark = BACKENDS

CREATE_PROJECT = "/swarm.ticketing.v1.TicketingService/CreateProject"
CREATE_WEBHOOK = "/swarm.events.v1.EventsService/CreateWebhook"


def _tickets_used(client: httpx.Client) -> int:
    usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
    used: int = usage["tickets_per_day"]["used"]
    return used


def _project(name: str, **ticket: Any) -> dict[str, Any]:
    return {"name": name, "tickets": [{"key": "a", "name": "A"}, {"key": "b", "name": "B", **ticket}]}


def test_retried_create_project_without_idempotency_key_creates_and_charges_once(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"retry-{uuid.uuid4().hex[:6]}", plan="free")
    with (
        lossy_proxy(mesh.app.state.settings.ticketing_target) as proxy,
        mesh.gateway(ticketing_target=proxy.target) as base_url,
        mesh.as_key(key, base_url) as client,
    ):
        proxy.lose_answers(CREATE_PROJECT)
        r = client.post("/api/projects", json=_project("once"))
        assert r.status_code == 201, r.text
        # The backend saw the call twice: the first answer was lost, the channel retried.
        assert proxy.forwarded[CREATE_PROJECT] == 2
        listed = client.get("/api/projects").json()["items"]
        assert [p["id"] for p in listed] == [r.json()["project"]["id"]]
        assert len(client.get("/api/tickets").json()["items"]) == 2
        assert _tickets_used(client) == 2


def test_retried_create_webhook_without_idempotency_key_creates_one_webhook(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"retry-{uuid.uuid4().hex[:6]}")
    with (
        lossy_proxy(mesh.app.state.settings.events_target) as proxy,
        mesh.gateway(events_target=proxy.target) as base_url,
        mesh.as_key(key, base_url) as client,
    ):
        proxy.lose_answers(CREATE_WEBHOOK)
        r = client.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["*"]})
        assert r.status_code == 201, r.text
        assert proxy.forwarded[CREATE_WEBHOOK] == 2
        listed = client.get("/api/webhooks").json()["items"]
        assert [w["id"] for w in listed] == [r.json()["webhook"]["id"]]


def test_separate_requests_without_idempotency_key_are_separate_creates(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"twice-{uuid.uuid4().hex[:6]}", plan="free")
    with mesh.as_key(key) as client:
        first = client.post("/api/projects", json=_project("one"))
        second = client.post("/api/projects", json=_project("one"))
        assert first.status_code == second.status_code == 201
        assert first.json()["project"]["id"] != second.json()["project"]["id"]
        assert _tickets_used(client) == 4


def test_duplicate_dependency_is_400_naming_depends_on_and_charges_nothing(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"dup-{uuid.uuid4().hex[:6]}", plan="free")
    with mesh.as_key(key) as client:
        r = client.post("/api/projects", json=_project("dup", depends_on=["a", "a"]))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert "depends_on" in (error["field"] or "") + error["message"]
        assert client.get("/api/projects").json()["items"] == []
        assert _tickets_used(client) == 0


def test_the_longest_idempotency_key_the_api_accepts_works(mesh: Mesh) -> None:
    # 128 characters is what the Idempotency-Key pattern allows; backends
    # that derive their own keys from it must still take it.
    key = mesh.tenant_with_key(f"long-{uuid.uuid4().hex[:6]}", plan="free")
    idem = "k" * 128
    with mesh.as_key(key) as client:
        first = client.post("/api/projects", json=_project("long"), headers={"Idempotency-Key": idem})
        again = client.post("/api/projects", json=_project("long"), headers={"Idempotency-Key": idem})
        assert first.status_code == again.status_code == 201, (first.text, again.text)
        assert first.json()["project"]["id"] == again.json()["project"]["id"]
        assert _tickets_used(client) == 2
        too_long = client.post("/api/projects", json=_project("x"), headers={"Idempotency-Key": idem + "k"})
        assert too_long.status_code == 422 and "Idempotency-Key" in too_long.text


def test_retried_template_version_without_idempotency_key_makes_one_version(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"retry-{uuid.uuid4().hex[:6]}")
    add_version = "/swarm.ticketing.v1.AgentTemplateService/AddTemplateVersion"
    with (
        lossy_proxy(mesh.app.state.settings.ticketing_target) as proxy,
        mesh.gateway(ticketing_target=proxy.target) as base_url,
        mesh.as_key(key, base_url) as client,
    ):
        slug = f"t{uuid.uuid4().hex[:8]}-coder"
        made = client.post("/api/templates", json={"slug": slug, "agent_type": "coder", "name": "Coder"})
        assert made.status_code == 201, made.text
        proxy.lose_answers(add_version)
        r = client.post(f"/api/templates/{slug}/versions", json={"prompt": "You are careful."})
        assert r.status_code == 201, r.text
        assert proxy.forwarded[add_version] == 2
        versions = client.get(f"/api/templates/{slug}").json()["versions"]
        assert [v["version"] for v in versions] == [1], "the lost answer's retry made no second version"
