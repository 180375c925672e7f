"""Gateway settings: environment variables SWARM_GATEWAY_*."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from swarm_gateway.dashboard.session import valid_fernet_key
from swarmcommon.settings import service_config
from swarmcommon.tls import ClientTls

MiB = 1024 * 1024

# Values that only ever come from an example file: deploy/k8s ships
# "PLACEHOLDER-not-a-real-token-change-me" so a dev cluster starts.
PLACEHOLDER_MARKERS = ("placeholder", "change-me", "changeme", "replace-me", "not-a-real")
# Shorter than this, a bearer token is a word someone typed, not a secret.
MIN_ADMIN_TOKEN_LENGTH = 16


class Settings(BaseSettings):
    # Errors must not print the offending value: here it is a secret.
    model_config = SettingsConfigDict(**service_config("GATEWAY"), hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    ticketing_target: str = "127.0.0.1:50051"
    quota_target: str = "127.0.0.1:50052"
    events_target: str = "127.0.0.1:50053"
    telemetry_target: str = "127.0.0.1:50054"
    vmhost_target: str = "127.0.0.1:50055"
    # Bearer token for /admin routes; empty disables the admin surface.
    admin_token: str = ""
    # How long an authenticated API key is trusted without asking quota again.
    # A key revoked through this gateway is forgotten at once; one revoked
    # elsewhere stops working within this many seconds.
    auth_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    # Default deadline of every backend call.
    backend_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A test send waits for the receiver, which may take the events
    # service's whole delivery timeout (10 s by default) to answer.
    test_send_timeout_seconds: float = Field(default=25.0, gt=0, le=300)
    # The largest request body read, in bytes; larger is 413 before it is
    # buffered. The default holds the biggest project worth sending in one
    # request (e.g. 500 tickets with 20,000-character descriptions is ~10 MB)
    # and stays well under what one gRPC call to a backend carries (32 MiB).
    max_body_bytes: int = Field(default=16 * MiB, ge=1024, le=256 * MiB)
    # A comment line on idle Server-Sent-Events streams this often, so
    # proxies keep them open and dead clients are noticed.
    sse_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    # The dashboard's session cookie key (a Fernet key: `python -c "from
    # cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
    # Empty: a random key per process, so dashboard sessions end when the
    # gateway restarts and replicas do not share them.
    dashboard_session_key: str = ""
    # How long a dashboard login lasts.
    dashboard_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    log_level: str = "INFO"
    # The gateway's own certificate for calling the services (mutual TLS):
    # a directory with tls.crt, tls.key and ca.crt. Without it the gateway
    # starts only with INSECURE_DEV=true, and then calls them in plaintext.
    tls_dir: str = ""
    insecure_dev: bool = False

    def client_tls(self) -> ClientTls | None:
        if self.tls_dir:
            return ClientTls.in_dir(self.tls_dir)
        if self.insecure_dev:
            return None
        raise ValueError(
            "SWARM_GATEWAY_TLS_DIR is not set: the gateway calls the services with mutual TLS "
            "(a directory holding tls.crt, tls.key and ca.crt), or set SWARM_GATEWAY_INSECURE_DEV=true "
            "for a plaintext development mesh"
        )

    @field_validator("dashboard_session_key")
    @classmethod
    def _fernet_session_key(cls, value: str) -> str:
        if value and not valid_fernet_key(value):
            raise ValueError(
                "SWARM_GATEWAY_DASHBOARD_SESSION_KEY is not a Fernet key (32 bytes, url-safe base64): "
                "make one with Fernet.generate_key(), or leave it empty for a random key per process"
            )
        return value

    @field_validator("admin_token")
    @classmethod
    def _no_placeholder_admin_token(cls, value: str) -> str:
        if not value:
            return value
        lowered = value.lower()
        if any(marker in lowered for marker in PLACEHOLDER_MARKERS) or len(value) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                "the admin token looks like a placeholder or a default (an example value, or shorter "
                f"than {MIN_ADMIN_TOKEN_LENGTH} characters): set SWARM_GATEWAY_ADMIN_TOKEN to a random "
                "one, e.g. `openssl rand -hex 32`, or leave it empty to disable the /admin routes"
            )
        return value
