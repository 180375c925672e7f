"""What a guest holds: its agent token and the CA it verifies services with.

vmhost gives a guest its token (SWARM_AGENT_TOKEN) and the CA file
(SWARM_AGENT_CA_FILE) in its environment; every heartbeat answers with a
renewed token, which replaces the old one for every later call. Every call
the guest makes carries the current token (`authorization: Bearer …`) over
TLS to the service's agent port (no client certificate: the token is the
credential). Without a token the guest runs as in insecure dev mode:
plaintext, no credentials.

    creds = AgentCredentials.from_env(os.environ)
    client = clients.TicketingClient(target, **creds.channel("ticketing"))
    creds.renew(reply.agent_token)   # after a heartbeat
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from swarmcommon.tls import ClientTls, TlsFiles

TOKEN_ENV, CA_FILE_ENV = "SWARM_AGENT_TOKEN", "SWARM_AGENT_CA_FILE"


class AgentCredentials:
    def __init__(self, token: str = "", ca_file: str = "") -> None:
        self._token = token
        self._lock = threading.Lock()
        self.ca_file = ca_file

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentCredentials:
        return cls(env.get(TOKEN_ENV, ""), env.get(CA_FILE_ENV, ""))

    @property
    def token(self) -> str:
        with self._lock:
            return self._token

    def renew(self, token: str) -> None:
        """A renewed token (from a heartbeat) for every call from now on; an
        empty one (vmhost in dev mode) changes nothing."""
        if token:
            with self._lock:
                self._token = token

    def metadata(self) -> Sequence[tuple[str, str]]:
        """The current token as call metadata (a ServiceChannel `metadata=` source)."""
        token = self.token
        return [("authorization", f"Bearer {token}")] if token else []

    def tls(self, server_name: str) -> ClientTls | None:
        """TLS trusting only the mesh CA, checking the server's certificate
        for `server_name` (guests dial an address, not the service's name)."""
        if not self.ca_file:
            return None
        # ClientTls watches a certificate and key too; a guest presents none,
        # so the CA stands in for them (never read as a client certificate).
        ca = Path(self.ca_file)
        return ClientTls(TlsFiles(ca, ca, ca), present_cert=False, server_name=server_name)

    def channel(self, server_name: str) -> dict[str, Any]:
        """Keyword arguments for a swarmcommon client or ServiceChannel."""
        return {"metadata": self.metadata, "tls": self.tls(server_name)}

    def otlp_credentials(self) -> grpc.ChannelCredentials | None:
        """For the OTLP exporter: TLS with the CA and the current token on
        every export (the exporter's own headers are fixed at start)."""
        if not self.ca_file:
            return None
        credentials = self

        class _Token(grpc.AuthMetadataPlugin):  # type: ignore[misc]
            def __call__(self, context: Any, callback: Any) -> None:
                callback(tuple(credentials.metadata()), None)

        return grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(Path(self.ca_file).read_bytes()),
            grpc.metadata_call_credentials(_Token()),
        )


_process: AgentCredentials | None = None
_process_lock = threading.Lock()


def current() -> AgentCredentials:
    """This guest process's credentials, read from its environment the first
    time (not at import: the zygote imports this before a guest's environment
    is set). The heartbeat renews them; the runtime's clients read them."""
    global _process
    with _process_lock:
        if _process is None:
            _process = AgentCredentials.from_env(os.environ)
        return _process


def export_spans(provider: Any, target: str, credentials: AgentCredentials) -> bool:
    """Send this guest's spans to telemetry's agent port over TLS with the
    current token; False when the guest has no credentials (dev mode, where
    the stock OTEL_EXPORTER_OTLP_* environment does it)."""
    channel_credentials = credentials.otlp_credentials()
    if channel_credentials is None or not target or not hasattr(provider, "add_span_processor"):
        return False
    # Imported lazily, like swarmcommon.telemetry: the exporter pulls in its own gRPC stack.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(
        endpoint=target,
        credentials=channel_credentials,
        channel_options=(("grpc.ssl_target_name_override", "telemetry"),),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return True
