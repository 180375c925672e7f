"""Gateway settings: environment variables SWARM_GATEWAY_*."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from swarmcommon.settings import service_config


class Settings(BaseSettings):
    model_config = service_config("GATEWAY")

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
    # Deadline for each backend call.
    backend_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A comment line on idle Server-Sent-Events streams this often, so
    # proxies keep them open and dead clients are noticed.
    sse_keepalive_seconds: float = Field(default=15.0, gt=0, le=300)
    log_level: str = "INFO"
