"""What a guest is told: its program, its environment, and where it finds
the control plane from inside its sandbox."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from swarm_vmhost.config import Settings
from swarm_vmhost.domain import Agent
from swarm_vmhost.network import Bridge

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "0.0.0.0", "localhost", "[::1]", "[::]")
# Passed through from vmhost's own environment, so guests find the same Python packages.
# Never HOME: the host's holds git configuration, credentials and ssh keys; a
# guest's HOME is its own working directory (swarmagent.guest sets it).
INHERITED = ("PYTHONPATH", "VIRTUAL_ENV", "LANG")
# Never given to a guest, whoever configures it: the model provider's keys
# (the LLM proxy holds them; guests hold only their agent token) and anything
# named like one. A value holding one of vmhost's own such secrets is dropped too.
PROVIDER_SECRET = re.compile(r"^ANTHROPIC_|_API_KEY$|_AUTH_TOKEN$", re.IGNORECASE)
LLM_BASE_URL_ENV = "SWARM_LLM_BASE_URL"


def guest_target(target: str, bridge: Bridge, isolated: bool) -> str:
    """How a guest reaches a service: one on this host (loopback or every
    address) through the bridge address when the guest has its own namespace
    (the host's loopback is not its loopback); any other host as given."""
    if not target or not isolated:
        return target
    host, _, port = target.rpartition(":")
    return f"{bridge.address}:{port}" if host in LOCAL_HOSTS else target


def guest_url(url: str, bridge: Bridge, isolated: bool) -> str:
    """A URL as a guest reaches it: a host on this machine (loopback or every
    address) becomes the bridge address when the guest has its own namespace."""
    parts = urlsplit(url)
    local = {h.strip("[]") for h in LOCAL_HOSTS}
    if not url or not isolated or parts.hostname not in local:
        return url
    netloc = f"{bridge.address}:{parts.port}" if parts.port else bridge.address
    return urlunsplit(parts._replace(netloc=netloc))


def host_secrets(environ: Mapping[str, str]) -> list[str]:
    """The provider keys (and the like) in vmhost's own environment."""
    return [value for key, value in environ.items() if PROVIDER_SECRET.search(key) and len(value) >= 8]


def without_secrets(env: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` without provider keys: none named like one, none holding one of vmhost's."""
    secrets = host_secrets(os.environ if environ is None else environ)
    dropped = sorted(k for k, v in env.items() if PROVIDER_SECRET.search(k) or any(s in v for s in secrets))
    if dropped:
        log.warning(
            "provider keys are never given to guests (they call the LLM proxy with their agent token); "
            "not passed: %s",
            ", ".join(dropped),
        )
    return {k: v for k, v in env.items() if k not in dropped}


def zygote_env() -> dict[str, str]:
    """The warm interpreter's environment: only what finds Python and its
    packages. Guests forked from it keep its initial environment in memory
    (and /proc/<pid>/environ), so it must hold none of vmhost's secrets."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update({key: os.environ[key] for key in INHERITED if key in os.environ})
    return without_secrets(env)


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
    if settings.llm_proxy_url:  # the only LLM endpoint a guest with a token may use
        env[LLM_BASE_URL_ENV] = guest_url(settings.llm_proxy_url, bridge, isolated).replace(
            "{host}", host_address
        )
    for key in INHERITED:
        if key in os.environ:
            env[key] = os.environ[key]
    # Local repositories: only the tenant's own directory, only where enabled.
    env.pop("SWARM_GIT_LOCAL_ROOT", None)
    if settings.local_repository_root:
        root = os.path.abspath(settings.local_repository_root)
        env["SWARM_GIT_LOCAL_ROOT"] = os.path.join(root, agent.tenant_id)
    env = without_secrets(env)
    env.update(credentials)  # last: nothing configured can replace the guest's own token
    return env
