"""How a service listens and dials: mutual TLS and per-method authorization
by default, plaintext only when explicitly in insecure dev mode.

    security = ServerSecurity.from_settings(settings, agent_tokens=True, revoked=revocations.revoked)
    start_server([...], listen_address=..., security=security)
    ServiceChannel(target, tls=client_tls(settings))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from swarmcommon.agenttoken import Revoked, TokenVerifier
from swarmcommon.clock import Clock
from swarmcommon.settings import ServiceSettings
from swarmcommon.tls import ClientTls, TlsFiles

log = logging.getLogger(__name__)


class InsecureConfig(ValueError):
    """Neither certificates nor an explicit insecure dev mode: refuse to start."""


@dataclass(frozen=True)
class ServerSecurity:
    trust_domain: str
    tls: TlsFiles | None  # None only in insecure dev mode
    verifier: TokenVerifier | None = None  # None: agent tokens are not accepted
    reflection: bool = False

    @property
    def insecure_dev(self) -> bool:
        return self.tls is None

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        *,
        agent_tokens: bool = False,
        revoked: Revoked | None = None,
        clock: Clock | None = None,
    ) -> ServerSecurity:
        """`agent_tokens`: this service serves guests, so it verifies their
        tokens with the keys in `agent_token_public_keys`; `revoked` says
        whether a valid token's agent was terminated since (vmhost's own
        agent store, or a `swarmcommon.revocation.RevocationList`)."""
        verifier = None
        if agent_tokens and settings.agent_token_public_keys:
            paths = [Path(p.strip()) for p in settings.agent_token_public_keys.split(",") if p.strip()]
            verifier = TokenVerifier.from_files(paths, revoked=revoked, clock=clock)
        elif agent_tokens and not settings.insecure_dev:
            raise InsecureConfig(
                f"{settings.env_prefix()}AGENT_TOKEN_PUBLIC_KEYS is required: guests call this service "
                "with tokens vmhost signs"
            )
        if settings.insecure_dev:
            log.warning(
                "INSECURE DEV MODE: plaintext gRPC, callers without a certificate are trusted as "
                "'insecure-dev' and may call everything. Never run this outside a laptop.",
                extra={"setting": f"{settings.env_prefix()}INSECURE_DEV"},
            )
            return cls(settings.trust_domain, None, verifier, settings.reflection)
        if not settings.tls_dir:
            raise InsecureConfig(
                f"{settings.env_prefix()}TLS_DIR is not set: a service listens only with mutual TLS "
                f"(set it to a directory holding tls.crt, tls.key and ca.crt), or set "
                f"{settings.env_prefix()}INSECURE_DEV=true for a plaintext development mesh"
            )
        return cls(settings.trust_domain, TlsFiles.in_dir(settings.tls_dir), verifier, settings.reflection)


def client_tls(settings: ServiceSettings) -> ClientTls | None:
    """The workload's own certificate for calls it makes; None in insecure dev mode."""
    if settings.insecure_dev or not settings.tls_dir:
        return None
    return ClientTls.in_dir(settings.tls_dir)
