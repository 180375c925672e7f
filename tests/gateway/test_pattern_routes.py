"""Collaboration patterns through the REST API: on the project (the default of
its tickets) and per ticket; an ensemble's attempts are tickets of their own,
charged as tickets; bad combinations are 4xx naming the field and write
nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS


def test_patterns_on_the_project_and_its_tickets(mesh: Mesh) -> None:
    key = mesh.tenant_with_key(f"pat-{uuid.uuid4().hex[:6]}")
    with mesh.as_key(key) as client:
        r = client.post(
            "/api/projects",
            json={
                "name": "patterns",
                "pattern": "single",
                "tickets": [
                    {"key": "plain", "name": "Plain"},
                    {"key": "piped", "name": "Piped", "pattern": "pipeline"},
                    {"key": "many", "name": "Many", "pattern": "ensemble", "ensemble_size": 2},
                ],
            },
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["project"]["pattern"] == "single" and body["project"]["ticket_count"] == 3
        tickets = {t["name"]: t for t in body["tickets"]}
        assert tickets["Plain"]["stages"] == ["coder", "reviewer"] and tickets["Plain"]["pattern"] == "single"
        assert tickets["Piped"]["stages"] == ["coder", "security", "tests", "reviewer"]
        many = tickets["Many"]
        assert many["stages"] == ["judge", "reviewer"] and many["state"] == "blocked"
        attempts = [t for t in body["tickets"] if t["ensemble_ticket_id"] == many["id"]]
        assert sorted(t["attempt"] for t in attempts) == [1, 2]
        assert all(t["stages"] == ["coder"] and t["pattern"] == "ensemble" for t in attempts)
        assert tickets["Plain"]["ensemble_ticket_id"] is None and tickets["Plain"]["attempt"] is None
        usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
        assert usage["tickets_per_day"]["used"] == 5, "an ensemble of 2 is charged as 3 tickets"


@pytest.mark.parametrize(
    ("ticket", "status", "field"),
    [
        ({"pattern": "pipeline", "stages": ["coder"]}, 400, "tickets[0].stages"),
        (
            {"pattern": "ensemble", "ensemble_size": 2, "ensemble_quorum": 3},
            400,
            "tickets[0].ensemble_quorum",
        ),
        ({"pattern": "pipeline", "ensemble_size": 3}, 400, "tickets[0].ensemble_size"),
        ({"pattern": "ensemble", "ensemble_size": 9}, 422, "ensemble_size"),
        ({"pattern": "swarm"}, 422, "pattern"),
    ],
)
def test_a_bad_pattern_is_a_4xx_naming_the_field_and_writes_nothing(
    mesh: Mesh, ticket: dict[str, object], status: int, field: str
) -> None:
    key = mesh.tenant_with_key(f"badpat-{uuid.uuid4().hex[:6]}")
    with mesh.as_key(key) as client:
        r = client.post("/api/projects", json={"name": "p", "tickets": [{"key": "a", "name": "A", **ticket}]})
        assert r.status_code == status, r.text
        if status == 400:
            assert r.json()["error"]["field"] == field
        else:
            assert any(d["loc"][-1] == field for d in r.json()["detail"])
        assert client.get("/api/projects").json()["items"] == []
        usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
        assert usage["tickets_per_day"]["used"] == 0
