"""Agents and the agent pool over REST: a gateway in front of the real mesh
and a real vmhost (process driver, on a bridge of its own) — spawn, list,
get, stop, healing, the target pool, another tenant's 404s, bad input, and
the agent routes fuzzed from their own OpenAPI document.

The shared mesh has no vmhost, so each test starts one and serves a second
gateway pointed at it (Mesh.gateway)."""

from __future__ import annotations

import ipaddress
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from swarm_vmhost import network
from swarm_vmhost import server as vmhost_server
from swarm_vmhost.config import Settings as VmHostSettings
from swarm_vmhost.domain import AgentState, Heartbeat
from tests.gateway.test_page_tokens import _forgeries, _names_page_token
from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh, routes_tagged, run_mesh
from tests.support.waiting import eventually

# As tests/vmhost/harness.py: test bridges take a /24 of this range, chosen under this lock.
TEST_POOL = ipaddress.IPv4Network("10.213.0.0/16")
BRIDGE_LOCK = Path(tempfile.gettempdir()) / "swarm-vmhost-test-bridges.lock"
MAX_PER_ROLE = 5
EXAMPLES_PER_OPERATION = 15

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.fail("vmhost creates a bridge for its guests: run these tests as root", pytrace=False)


@contextmanager
def running_vmhost(workdir: Path, quota_target: str) -> Iterator[vmhost_server.VmHostApp]:
    """vmhost on its own bridge and SQLite file, running `sleep` guests as
    plain processes, holding its VMs in the mesh's quota."""
    bridge = network.claim_bridge(TEST_POOL, "swg", BRIDGE_LOCK)
    try:
        app = vmhost_server.start(
            VmHostSettings(
                database_url=f"sqlite:///{workdir / 'vmhost.db'}",
                listen_address="127.0.0.1:0",
                bridge_name=bridge.name,
                bridge_cidr=str(bridge.network),
                workroot=str(workdir / "vmhost"),
                monitor_interval_seconds=0,  # the tests run passes themselves
                guest_command="sleep 600",
                default_driver="process",
                warm_guests=0,
                quota_target=quota_target,
                pool_max_per_role=MAX_PER_ROLE,
            )
        )
        try:
            yield app
        finally:
            app.stop(grace=1)
    finally:
        network.remove_bridge(bridge)


@dataclass
class AgentsApi:
    mesh: Mesh
    vmhost: vmhost_server.VmHostApp
    base_url: str

    def as_tenant(self, tenant_id: str, plan: str = "pro") -> httpx.Client:
        return self.mesh.as_key(self.mesh.tenant_with_key(tenant_id, plan), self.base_url)


@pytest.fixture
def api(mesh: Mesh, tmp_path: Path) -> Iterator[AgentsApi]:
    with running_vmhost(tmp_path, mesh.app.state.settings.quota_target) as vmhost:
        with mesh.gateway(vmhost_target=f"127.0.0.1:{vmhost.port}") as base_url:
            yield AgentsApi(mesh, vmhost, base_url)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@BACKENDS
def test_spawn_list_get_and_stop_an_agent(api: AgentsApi) -> None:
    with api.as_tenant(_tenant()) as client:
        r = client.post("/api/agents", json={"role": "coder"}, headers={"Idempotency-Key": "spawn-1"})
        assert r.status_code == 201, r.text
        agent = r.json()
        assert (agent["role"], agent["state"], agent["driver"], agent["isolation"]) == (
            "coder",
            "starting",
            "process",
            "none",
        )
        assert agent["template"] == "default" and agent["address"] and agent["ticket_id"] is None
        assert agent["created_at"] and agent["last_heartbeat_at"] is None
        # The same Idempotency-Key is the same agent, and one VM in quota.
        retry = client.post("/api/agents", json={"role": "coder"}, headers={"Idempotency-Key": "spawn-1"})
        assert retry.status_code == 201 and retry.json()["id"] == agent["id"]
        other = client.post(
            "/api/agents", json={"role": "reviewer", "template": "rev-v2", "driver": "process"}
        )
        assert other.status_code == 201, other.text
        assert (other.json()["role"], other.json()["template"]) == ("reviewer", "rev-v2")

        listed = client.get("/api/agents").json()
        assert [a["id"] for a in listed["items"]] == [agent["id"], other.json()["id"]]
        assert listed["next_page_token"] == ""
        assert [a["id"] for a in client.get("/api/agents", params={"role": "reviewer"}).json()["items"]] == [
            other.json()["id"]
        ]
        first = client.get("/api/agents", params={"page_size": 1}).json()
        assert len(first["items"]) == 1 and first["next_page_token"]
        for what, forged in _forgeries(first["next_page_token"]):  # as on every list route
            r = client.get("/api/agents", params={"page_token": forged})
            assert _names_page_token(r), (what, r.status_code, r.text[:300])
        assert client.get(f"/api/agents/{agent['id']}").json() == agent
        usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
        assert usage["vms"]["used"] == 2

        stopped = client.delete(f"/api/agents/{agent['id']}")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "terminated" and stopped.json()["address"] is None
        assert stopped.json()["state_reason"] == "terminated by its tenant"
        assert client.delete(f"/api/agents/{agent['id']}").json()["state"] == "terminated"  # idempotent
        assert [a["id"] for a in client.get("/api/agents").json()["items"]] == [other.json()["id"]]
        terminated = client.get("/api/agents", params={"state": "terminated"}).json()["items"]
        assert [a["id"] for a in terminated] == [agent["id"]]
        usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
        assert usage["vms"]["used"] == 1


@BACKENDS
def test_an_agents_healing_actions_are_listed(api: AgentsApi) -> None:
    tenant = _tenant()
    with api.as_tenant(tenant) as client:
        agent = client.post("/api/agents", json={"role": "coder"}).json()
        assert client.get(f"/api/agents/{agent['id']}/healing").json() == {"items": [], "next_page_token": ""}
        record = api.vmhost.host.agents.get(tenant, agent["id"])
        assert record.handle is not None and record.handle.pid is not None
        os.killpg(record.handle.pid, signal.SIGKILL)

        def healed() -> list[dict[str, object]]:
            api.vmhost.monitor.run_once()
            items: list[dict[str, object]] = client.get(f"/api/agents/{agent['id']}/healing").json()["items"]
            return items if any(h["type"] == "spawn_replacement" for h in items) else []

        actions = eventually(healed, timeout=20, what="the dead guest healed")
        assert {h["type"] for h in actions} == {"terminate_agent", "release_tickets", "spawn_replacement"}
        assert all(h["check"] == "vm_heartbeat" and h["agent_id"] == agent["id"] for h in actions)
        replacement = next(h for h in actions if h["type"] == "spawn_replacement")["replacement_agent_id"]
        assert client.get(f"/api/agents/{replacement}").json()["replaces_agent_id"] == agent["id"]


@BACKENDS
def test_the_agent_pool_is_kept_by_vmhost(api: AgentsApi) -> None:
    with api.as_tenant(_tenant()) as client:
        empty = client.get("/api/agent-pool").json()
        assert empty == {"targets": [], "max_count": MAX_PER_ROLE, "updated_at": None}
        r = client.put(
            "/api/agent-pool",
            json={"targets": [{"role": "reviewer", "count": 1}, {"role": "coder", "count": 2}]},
        )
        assert r.status_code == 200, r.text
        assert [(t["role"], t["count"], t["live_count"]) for t in r.json()["targets"]] == [
            ("coder", 2, 0),
            ("reviewer", 1, 0),
        ]
        assert r.json()["updated_at"]
        api.vmhost.pooler.run_once()
        pool = client.get("/api/agent-pool").json()
        assert [(t["role"], t["live_count"], t["detail"]) for t in pool["targets"]] == [
            ("coder", 2, None),
            ("reviewer", 1, None),
        ]
        roles = sorted(a["role"] for a in client.get("/api/agents").json()["items"])
        assert roles == ["coder", "coder", "reviewer"]
        # A lower target: surplus idle agents go (each heartbeats idle first, as its runtime would).
        for a in client.get("/api/agents", params={"role": "coder"}).json()["items"]:
            api.vmhost.host.agents.heartbeat(_idle(api, a["id"]))
        assert (
            client.put("/api/agent-pool", json={"targets": [{"role": "coder", "count": 1}]}).status_code
            == 200
        )
        api.vmhost.pooler.run_once()
        assert len(client.get("/api/agents", params={"role": "coder"}).json()["items"]) == 1
        assert (
            len(client.get("/api/agents", params={"role": "reviewer"}).json()["items"]) == 1
        )  # unmanaged now


def _idle(api: AgentsApi, agent_id: str) -> Heartbeat:
    """What an agent's runtime says when it has no ticket."""
    agent = api.vmhost.host.agents.find(agent_id)
    assert agent is not None
    return Heartbeat(agent.tenant_id, agent.id, AgentState.READY, None)


@BACKENDS
def test_another_tenants_agents_and_pool_are_invisible(api: AgentsApi) -> None:
    with api.as_tenant(_tenant()) as owner, api.as_tenant(_tenant()) as other:
        agent = owner.post("/api/agents", json={"role": "coder"}).json()
        assert (
            owner.put("/api/agent-pool", json={"targets": [{"role": "coder", "count": 1}]}).status_code == 200
        )
        exercised: set[tuple[str, str]] = set()

        def refused(method: str, route: str, **kw: object) -> None:
            exercised.add((method, route))
            r = other.request(method, route.replace("{agent_id}", agent["id"]), **kw)  # type: ignore[arg-type]
            assert r.status_code == 404, f"{method} {route}: {r.status_code} {r.text}"
            assert r.json()["error"]["status"] == "NOT_FOUND"

        refused("GET", "/api/agents/{agent_id}")
        refused("GET", "/api/agents/{agent_id}/healing")
        refused("DELETE", "/api/agents/{agent_id}")
        exercised |= {
            ("GET", "/api/agents"),
            ("GET", "/api/agent-pool"),
            ("PUT", "/api/agent-pool"),
            ("POST", "/api/agents"),
        }
        assert other.get("/api/agents").json()["items"] == []
        assert other.get("/api/agents", params={"state": "terminated"}).json()["items"] == []
        assert other.get("/api/agent-pool").json()["targets"] == []
        # Another tenant's pool and spawns are its own: the owner's are unchanged.
        assert (
            other.put("/api/agent-pool", json={"targets": [{"role": "coder", "count": 0}]}).status_code == 200
        )
        assert other.post("/api/agents", json={"role": "coder"}).status_code == 201
        assert [(t["role"], t["count"]) for t in owner.get("/api/agent-pool").json()["targets"]] == [
            ("coder", 1)
        ]
        assert owner.get(f"/api/agents/{agent['id']}").json()["state"] == "starting"
        assert [a["id"] for a in owner.get("/api/agents").json()["items"]] == [agent["id"]]
    assert routes_tagged(api.mesh, {"agents"}) - exercised == set(), (
        "routes not covered by the isolation walk"
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        pytest.param("POST", "/api/agents", {"role": "wizard"}, 422, "role", id="unknown-role"),
        pytest.param("POST", "/api/agents", {}, 422, "role", id="no-role"),
        pytest.param(
            "POST", "/api/agents", {"role": "coder", "driver": "docker"}, 422, "driver", id="unknown-driver"
        ),
        pytest.param(
            "POST", "/api/agents", {"role": "coder", "template": "a b"}, 422, "template", id="bad-template"
        ),
        pytest.param("POST", "/api/agents", {"role": 1}, 422, "role", id="role-not-a-string"),
        pytest.param(
            "PUT",
            "/api/agent-pool",
            {"targets": [{"role": "wizard", "count": 1}]},
            422,
            "role",
            id="pool-unknown-role",
        ),
        pytest.param(
            "PUT",
            "/api/agent-pool",
            {"targets": [{"role": "coder", "count": -1}]},
            422,
            "count",
            id="pool-negative",
        ),
        pytest.param(
            "PUT",
            "/api/agent-pool",
            {"targets": [{"role": "coder", "count": "2"}]},
            422,
            "count",
            id="pool-string-count",
        ),
        pytest.param(
            "PUT",
            "/api/agent-pool",
            {"targets": [{"role": "coder", "count": MAX_PER_ROLE + 1}]},
            400,
            "targets[0].count",
            id="pool-over-host-max",
        ),
        pytest.param(
            "PUT",
            "/api/agent-pool",
            {"targets": [{"role": "coder", "count": 1}, {"role": "coder", "count": 2}]},
            400,
            "targets[1].role",
            id="pool-repeated-role",
        ),
        pytest.param("PUT", "/api/agent-pool", {}, 422, "targets", id="pool-no-targets"),
        pytest.param("GET", "/api/agents?state=sleeping", None, 422, "state", id="unknown-state-filter"),
        pytest.param("GET", "/api/agents/not-a-uuid", None, 422, "agent_id", id="bad-agent-id"),
        pytest.param("DELETE", f"/api/agents/{uuid.uuid4()}", None, 404, None, id="unknown-agent"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    api: AgentsApi, method: str, path: str, body: object, status: int, field: str | None
) -> None:
    with api.as_tenant(_tenant()) as client:
        assert (
            client.put("/api/agent-pool", json={"targets": [{"role": "reviewer", "count": 2}]}).status_code
            == 200
        )
        r = client.request(method, path, json=body)
        assert r.status_code == status, r.text
        if status == 422:  # FastAPI's shape: where each problem is
            assert field in {str(part) for d in r.json()["detail"] for part in d["loc"]}, r.text
        elif field is not None:
            error = r.json()["error"]
            assert field in f"{error.get('field')} {error['message']}", error
        assert client.get("/api/agents").json()["items"] == []
        assert [(t["role"], t["count"]) for t in client.get("/api/agent-pool").json()["targets"]] == [
            ("reviewer", 2)
        ]


# -- fuzzed from the OpenAPI document -------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("agents-fuzz")
    quota, ticketing, events, telemetry = (f"sqlite:///{tmp / f'{n}.db'}" for n in ("q", "t", "e", "tm"))
    for mesh in run_mesh(quota, ticketing, events, telemetry):
        key = mesh.tenant_with_key(f"fuzz-{uuid.uuid4().hex[:6]}", plan="pro")
        with running_vmhost(tmp, mesh.app.state.settings.quota_target) as vmhost:
            with mesh.gateway(vmhost_target=f"127.0.0.1:{vmhost.port}") as base_url:
                yield base_url, key


@pytest.fixture(scope="module")
def agents_schema(fuzzed: tuple[str, str]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed[0]}/openapi.json")


# Only the agent routes: tests/gateway/test_schemathesis.py fuzzes the rest
# (its mesh has no vmhost).
schema = schemathesis.pytest.from_fixture("agents_schema").include(tag="agents")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_agent_routes_never_error_and_match_their_schema(
    case: schemathesis.Case, fuzzed: tuple[str, str]
) -> None:
    # As tests/gateway/test_schemathesis.py: a request can satisfy the schema
    # and still be refused (a count over this host's limit), rightly a 400.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzzed[1]}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
