"""Forged page tokens on every list route: 400 naming page_token, never a 5xx.

A page token is base64 JSON {"f": fingerprint, "k": keyset position}; the
fingerprint is no secret, so a caller can build a token that passes it and
carries a position of the wrong shape. Each list route is first paged for
real (page_size=1) to learn its fingerprint and the shape of its position."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from swarm.telemetry.v1 import telemetry_pb2 as tmpb
from swarm.telemetry.v1 import telemetry_pb2_grpc as tmpb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarmagent.gitops import Author, init_repository
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS
from tests.support.mesh import ADMIN_TOKEN, Mesh
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

pytestmark = BACKENDS


def _encode(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return body


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _wrong_parts(value: object) -> list[object]:
    """Values of another shape than `value`, as a forger would put in its place."""
    if _is_time(value):
        naive = datetime.fromisoformat(str(value)).replace(tzinfo=None).isoformat()
        return [1, "yesterday", naive, ["x"], None]
    if isinstance(value, bool):
        return [1, "true", None]
    if isinstance(value, int):
        return [True, 2**70, "7", 1.5, None, [1]]
    if isinstance(value, float):
        return ["1.5", True, None]
    if isinstance(value, str):
        return [7, ["x"], {"x": 1}, "x" * 2000, None]
    return ["x", 7]


def _forgeries(token: str) -> list[tuple[str, str]]:
    """(what, token) for every wrong shape of `token`'s position, with its fingerprint."""
    real = _decode(token)
    fingerprint, key = real["f"], real["k"]
    assert isinstance(key, list) and key, real
    forged = [
        ("object-not-list", {"f": fingerprint, "k": {"a": 1}}),
        ("too-short", {"f": fingerprint, "k": key[:-1]}),
        ("too-long", {"f": fingerprint, "k": [*key, key[-1]]}),
        ("no-position", {"f": fingerprint}),
    ]
    for i, part in enumerate(key):
        for wrong in _wrong_parts(part):
            forged.append(
                (
                    f"k[{i}]={json.dumps(wrong)[:20]}",
                    {"f": fingerprint, "k": [*key[:i], wrong, *key[i + 1 :]]},
                )
            )
    return [(what, _encode(body)) for what, body in forged]


def _odd_but_well_typed(token: str) -> list[tuple[str, str]]:
    """Positions of the right types and odd values: any answer but a 5xx."""
    real = _decode(token)
    out = []
    for i, part in enumerate(real["k"]):
        if isinstance(part, int) and not isinstance(part, bool):
            for odd in (-1, -(2**62), 2**62):
                key = [*real["k"][:i], odd, *real["k"][i + 1 :]]
                out.append((f"k[{i}]={odd}", _encode({"f": real["f"], "k": key})))
    return out


def _fill_tenant(mesh: Mesh, tenant: str, client: httpx.Client, receiver: Receiver) -> dict[str, str]:
    """At least two of everything each list route shows; returns ids for path parameters."""
    hooks = [
        client.post("/api/webhooks", json={"url": receiver.url, "events": ["*"]}).json()["webhook"]["id"]
        for _ in range(2)
    ]
    for n in range(2):  # public marketplace listings (free: no sealing key needed)
        listing = {
            "slug": f"{tenant}-l{n}",
            "agent_type": "reviewer",
            "name": f"Listing {n}",
            "category": "review",
            "visibility": "public",
            "pricing_model": "free",
            "prompt": "You review.",
        }
        r = client.post("/api/marketplace/templates", json=listing)
        assert r.status_code == 201, r.text
    reviewed = {"key": "r", "name": "R", "stages": ["coder", "reviewer"]}
    for n in range(2):
        r = client.post("/api/projects", json={"name": f"p{n}", "tickets": [{**reviewed, "key": f"r{n}"}]})
        assert r.status_code == 201, r.text
    projects = [p["id"] for p in client.get("/api/projects").json()["items"]]
    # Two merge requests: coders hand back a branch each.
    for n in range(2):
        claim = mesh.ticketing.ClaimTicket(
            tpb.ClaimTicketRequest(tenant_id=tenant, agent_id=f"coder-{n}", role=tpb.AGENT_ROLE_CODER)
        )
        mesh.ticketing.SubmitWork(
            tpb.SubmitWorkRequest(
                tenant_id=tenant,
                ticket_id=claim.ticket.id,
                claim_token=claim.lease.claim_token,
                result_json=json.dumps(
                    {"branch": f"swarm/b{n}", "commit": "c0ffee0000000000000000000000000000000000"}
                ),
            )
        )
    # Two dead letters: every claim of these fails until both are quarantined.
    poison = [{"key": f"x{i}", "name": f"X{i}"} for i in range(2)]
    assert client.post("/api/projects", json={"name": "poison", "tickets": poison}).status_code == 201
    for i in range(6):
        claim = mesh.ticketing.ClaimTicket(
            tpb.ClaimTicketRequest(tenant_id=tenant, agent_id=f"agent-{i}", role=tpb.AGENT_ROLE_CODER)
        )
        mesh.ticketing.ReportFailure(
            tpb.ReportFailureRequest(
                tenant_id=tenant, ticket_id=claim.ticket.id, claim_token=claim.lease.claim_token, reason="x"
            )
        )
    ticket = client.get("/api/tickets", params={"project_id": projects[0]}).json()["items"][0]["id"]
    # Two usage rows (grouped by project).
    ch = channel(f"127.0.0.1:{mesh.telemetry.port}")
    for project in projects:
        tmpb_grpc.TelemetryServiceStub(ch).RecordUsage(
            tmpb.RecordUsageRequest(
                request_id=str(uuid.uuid4()),
                tenant_id=tenant,
                project_id=project,
                request_type="coder",
                provider="anthropic",
                model="claude-sonnet-4-5",
                input_tokens=100,
                output_tokens=10,
            )
        )
    ch.close()
    mesh.admin("POST", f"/admin/tenants/{tenant}/api-keys", json={"display_name": "second"})
    eventually(
        lambda: len(client.get(f"/api/webhooks/{hooks[0]}/logs").json()["items"]) >= 2, what="two attempts"
    )
    # Snapshots need a real repository: pre_design, and two taken by hand.
    assert mesh.repository_root is not None
    repository = mesh.repository_root / tenant / "app.git"
    init_repository(repository, {"README.md": "# app\n"}, Author("Test", "test@swarm.invalid"))
    made = client.post(
        "/api/projects",
        json={"name": "git", "repository": str(repository), "tickets": [{"key": "g", "name": "G"}]},
    )
    assert made.status_code == 201, made.text
    project = made.json()["project"]["id"]
    for _ in range(2):
        r = client.post(f"/api/projects/{project}/snapshots", json={"description": "by hand"})
        assert r.status_code == 201, r.text
    # Two rollbacks (back to the first snapshot, then forward to the head it
    # discarded), so two rollback records and two project audit entries.
    snaps = client.get(f"/api/projects/{project}/snapshots").json()["items"]
    for target in (snaps[-1]["id"], None):
        if target is None:  # forward: the pre_rollback snapshot the first one took
            target = client.get(f"/api/projects/{project}/snapshots").json()["items"][0]["id"]
        plan = client.get(f"/api/projects/{project}/snapshots/{target}/plan").json()
        body = {"snapshot_id": target, "expected_head": plan["head_commit"]}
        r = client.post(f"/api/projects/{project}/rollback", json=body)
        assert r.status_code == 200 and r.json()["state"] == "done", r.text
    for n in range(2):  # conventions of the tenant and of the project
        assert client.post("/api/conventions", json={"content": f"Rule {n}"}).status_code == 201
        r = client.post(f"/api/projects/{project}/conventions", json={"content": f"Project rule {n}"})
        assert r.status_code == 201, r.text
    for reason in ("the build needs Python 3.12", "tests must not touch the network"):  # two learnings
        held = mesh.ticketing.ClaimTicket(
            tpb.ClaimTicketRequest(tenant_id=tenant, agent_id="agent-learn", project_id=project)
        )
        mesh.ticketing.ReportFailure(
            tpb.ReportFailureRequest(
                tenant_id=tenant, ticket_id=held.ticket.id, claim_token=held.lease.claim_token, reason=reason
            )
        )
    return {"ticket_id": ticket, "webhook_id": hooks[0], "tenant_id": tenant, "project_id": project}


Forger = Callable[[str], list[tuple[str, str]]]


def _walk_list_routes(
    mesh: Mesh, receiver: Receiver, forger: Forger, check: Callable[[httpx.Response], bool]
) -> None:
    """Page every list route for real, then send `forger`'s tokens and `check` each answer."""
    tenant = f"forge-{uuid.uuid4().hex[:6]}"
    key = mesh.tenant_with_key(tenant)
    mesh.tenant_with_key(f"other-{uuid.uuid4().hex[:6]}")  # a second tenant for /admin/tenants
    spec = mesh.http.get("/openapi.json").json()
    # This mesh has no vmhost: test_agent_routes.py forges the agent routes' tokens.
    paged = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if any(p["name"] == "page_token" for p in operation.get("parameters", []))
        and "agents" not in operation.get("tags", [])
    }
    walked: set[tuple[str, str]] = set()
    with mesh.as_key(key) as client:
        ids = _fill_tenant(mesh, tenant, client, receiver)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for method, route in sorted(paged):
            path = route.format(**{k: v for k, v in ids.items() if "{" + k + "}" in route})
            headers = admin if route.startswith("/admin") else {}
            first = client.request(method, path, params={"page_size": 1}, headers=headers)
            assert first.status_code == 200, (route, first.text)
            token = first.json()["next_page_token"]
            assert token, f"{route}: the test needs two items to get a real token"
            for what, forged in forger(token):
                r = client.request(method, path, params={"page_token": forged}, headers=headers)
                assert check(r), (route, what, r.status_code, r.text[:300])
            walked.add((method, route))
    assert walked == paged and len(walked) >= 11, sorted(walked)


def _names_page_token(r: httpx.Response) -> bool:
    return r.status_code == 400 and r.json()["error"]["field"] == "page_token"


def test_forged_page_tokens_are_400_naming_page_token_on_every_list_route(
    mesh: Mesh, receiver: Receiver
) -> None:
    _walk_list_routes(mesh, receiver, _forgeries, _names_page_token)


def test_forged_positions_of_the_right_type_are_never_a_5xx_on_any_list_route(
    mesh: Mesh, receiver: Receiver
) -> None:
    # Right types, values no real row has (beyond a 32-bit column, negative):
    # an empty page or a 400, never a database error.
    _walk_list_routes(mesh, receiver, _odd_but_well_typed, lambda r: r.status_code < 500)
