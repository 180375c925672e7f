"""What a guest holds instead of any platform secret: a short-lived agent
token vmhost signs (renewed by every heartbeat), and the CA it verifies the
services with. Terminating an agent revokes its tokens: vmhost's own
verifier asks the agent store, and ticketing and telemetry poll
ListRevokedAgents (swarmcommon.revocation).

Without a signing key (only allowed in insecure dev mode) guests get no
token and run in dev mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from swarm_vmhost.config import Settings
from swarm_vmhost.domain import Agent
from swarm_vmhost.stores import AgentStore
from swarmcommon.agenttoken import LEEWAY, AgentClaims, AgentIdentity, Revoked, TokenSigner
from swarmcommon.clock import Clock
from swarmcommon.pki import CA_CERT
from swarmcommon.security import InsecureConfig

log = logging.getLogger(__name__)

# What the guest finds in its environment.
TOKEN_ENV, CA_FILE_ENV = "SWARM_AGENT_TOKEN", "SWARM_AGENT_CA_FILE"


@dataclass(frozen=True)
class AgentCredentials:
    signer: TokenSigner | None  # None: insecure dev mode, guests get no token
    ca_file: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> AgentCredentials:
        if not settings.agent_token_signing_key:
            if not settings.insecure_dev:
                raise InsecureConfig(
                    f"{settings.env_prefix()}AGENT_TOKEN_SIGNING_KEY is not set: guests hold only the "
                    "tokens vmhost signs (or set INSECURE_DEV=true for a plaintext development mesh)"
                )
            log.warning("no agent token signing key: guests run without credentials (insecure dev mode)")
            return cls(None)
        signer = TokenSigner.from_file(
            settings.agent_token_signing_key,
            ttl=timedelta(seconds=settings.agent_token_ttl_seconds),
            clock=clock,
        )
        ca = settings.guest_ca_file or (str(Path(settings.tls_dir) / CA_CERT) if settings.tls_dir else "")
        if ca and not Path(ca).is_file():
            raise InsecureConfig(f"the CA file for guests ({ca}) does not exist")
        return cls(signer, str(Path(ca).resolve()) if ca else "")

    @property
    def enabled(self) -> bool:
        return self.signer is not None

    @property
    def retention(self) -> timedelta:
        """How long a revocation matters: until every token minted before it expired."""
        ttl = self.signer.ttl if self.signer is not None else timedelta(0)
        return ttl + LEEWAY

    def mint(self, agent: Agent) -> tuple[str, datetime] | None:
        if self.signer is None:
            return None
        return self.signer.mint(AgentIdentity(agent.id, agent.tenant_id, str(agent.role)))

    def guest_env(self, agent: Agent) -> dict[str, str]:
        minted = self.mint(agent)
        if minted is None:
            return {}
        env = {TOKEN_ENV: minted[0]}
        if self.ca_file:
            env[CA_FILE_ENV] = self.ca_file
        return env


def revoked_by(agents: AgentStore) -> Revoked:
    """vmhost's own revocation check: an agent's tokens work only while it is
    live (an agent vmhost does not know has no valid token either)."""

    def revoked(claims: AgentClaims) -> bool:
        agent = agents.find(claims.agent_id)
        return agent is None or not agent.is_live or agent.tenant_id != claims.tenant_id

    return revoked
