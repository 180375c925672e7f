"""What a guest is told about git and its home: never vmhost's HOME (its git
configuration, credentials and ssh keys), and local repositories only under
its own tenant's directory, only where an operator enabled them."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from swarm_vmhost.config import Settings
from swarm_vmhost.domain import Agent, AgentRole, AgentState, DriverName
from swarm_vmhost.guests import guest_env
from swarm_vmhost.network import Bridge

BRIDGE = Bridge("swarm0", ipaddress.IPv4Network("10.88.0.0/24"))


def _agent(tenant_id: str) -> Agent:
    now = datetime.now(UTC)
    return Agent(
        id="agent-1",
        tenant_id=tenant_id,
        template="default",
        role=AgentRole.CODER,
        driver=DriverName.NETNS,
        state=AgentState.STARTING,
        address="10.88.0.2",
        reservation_id=None,
        ticket_id=None,
        ticket_since=None,
        state_reason=None,
        replaces_agent_id=None,
        handle=None,
        last_heartbeat_at=None,
        created_at=now,
        updated_at=now,
        terminated_at=None,
    )


def test_guests_never_get_vmhosts_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/root")
    env = guest_env(Settings(), _agent("acme"), BRIDGE, True, "127.0.0.1:1")
    assert "HOME" not in env


def test_local_repositories_only_under_the_tenants_directory_where_enabled(tmp_path: Path) -> None:
    smuggled = Settings(guest_env=f"SWARM_GIT_LOCAL_ROOT={tmp_path}")
    assert "SWARM_GIT_LOCAL_ROOT" not in guest_env(smuggled, _agent("acme"), BRIDGE, True, "127.0.0.1:1")
    enabled = Settings(local_repository_root=str(tmp_path), guest_env=f"SWARM_GIT_LOCAL_ROOT={tmp_path}")
    for tenant in ("acme", "beta"):
        env = guest_env(enabled, _agent(tenant), BRIDGE, True, "127.0.0.1:1")
        assert env["SWARM_GIT_LOCAL_ROOT"] == str(tmp_path / tenant)
