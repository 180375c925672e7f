"""What a guest is told: its program, its environment, and where it finds
the control plane from inside its sandbox."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

from swarm_vmhost.config import Settings
from swarm_vmhost.domain import Agent
from swarm_vmhost.network import Bridge

LOCAL_HOSTS = ("127.0.0.1", "0.0.0.0", "localhost", "[::1]", "[::]")
# Passed through from vmhost's own environment, so guests find the same Python packages.
INHERITED = ("PYTHONPATH", "VIRTUAL_ENV", "HOME", "LANG")


def guest_target(target: str, bridge: Bridge, isolated: bool) -> str:
    """How a guest reaches a service: one on this host (loopback or every
    address) through the bridge address when the guest has its own namespace
    (the host's loopback is not its loopback); any other host as given."""
    if not target or not isolated:
        return target
    host, _, port = target.rpartition(":")
    return f"{bridge.address}:{port}" if host in LOCAL_HOSTS else target


def guest_command(settings: Settings) -> list[str]:
    """The guest program; "python" is this interpreter (the one with the agent runtime)."""
    parts = shlex.split(settings.guest_command)
    return [sys.executable, *parts[1:]] if parts and parts[0] == "python" else parts


def service_targets(settings: Settings, own_target: str, with_tokens: bool) -> dict[str, str]:
    """Where a guest calls each service, as the host sees it: the services'
    agent ports (TLS, a token per call; the mesh ports ask for a client
    certificate no guest holds). A guest without a token (insecure dev mode)
    falls back to a mesh port where no agent port is configured, as before."""

    def pick(agent_target: str, mesh_target: str) -> str:
        return agent_target if agent_target or with_tokens else mesh_target

    return {
        "SWARM_VMHOST_TARGET": own_target,
        "SWARM_TICKETING_TARGET": pick(settings.ticketing_agent_target, settings.ticketing_target),
        "SWARM_TELEMETRY_TARGET": pick(settings.telemetry_agent_target, settings.telemetry_target),
    }


def guest_env(
    settings: Settings,
    agent: Agent,
    bridge: Bridge,
    isolated: bool,
    own_target: str,
    credentials: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`own_target`: vmhost's port for guests; `credentials`: the guest's
    token and CA file (swarm_vmhost.credentials), none in insecure dev mode."""

    def t(target: str) -> str:
        return guest_target(target, bridge, isolated)

    credentials = dict(credentials or {})
    targets = {k: t(v) for k, v in service_targets(settings, own_target, bool(credentials)).items()}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "SWARM_AGENT_ID": agent.id,
        "SWARM_TENANT_ID": agent.tenant_id,
        "SWARM_AGENT_ROLE": agent.role,
        "SWARM_AGENT_TEMPLATE": agent.template,
        "SWARM_AGENT_ADDRESS": agent.address or "",
        **targets,
        "SWARM_AGENT_WORK": settings.guest_work,
        "SWARM_AGENT_HEARTBEAT_SECONDS": str(settings.heartbeat_interval_seconds),
    }
    telemetry = targets["SWARM_TELEMETRY_TARGET"]
    if telemetry and not credentials:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{telemetry}"
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    # With a token, the guest runtime sets up its own OTLP exporter (TLS, the
    # current token on every export) to SWARM_TELEMETRY_TARGET: the stock
    # environment variables can carry neither a renewed token nor a server name.
    # "{host}" in a value is the host as this guest reaches it.
    host_address = bridge.address if isolated else "127.0.0.1"
    for item in settings.guest_env.split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            env[key.strip()] = value.replace("{host}", host_address)
    for key in INHERITED:
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(credentials)  # last: nothing configured can replace the guest's own token
    return env
