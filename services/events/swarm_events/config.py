"""Events settings: environment variables SWARM_EVENTS_*."""

from __future__ import annotations

from pydantic import Field

from swarmcommon.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("EVENTS")

    database_url: str = "sqlite:///var/events.db"
    listen_address: str = "127.0.0.1:50053"
    # Networks webhook URLs may resolve into although they are private,
    # loopback or link-local (comma-separated CIDRs), e.g. "127.0.0.0/8" for
    # tests or an on-prem range. Empty: only public addresses.
    webhook_allow_networks: str = ""
    # Waits after the 1st, 2nd, ... failed attempt (seconds, comma-separated),
    # each with +-retry_jitter; then the delivery is given up.
    retry_schedule_seconds: str = "5,300,1800,7200,18000,36000,36000"
    retry_jitter: float = Field(default=0.2, ge=0, le=1)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # An endpoint failing for this long is disabled (webhook.disabled).
    disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    # Delivery threads; 0 turns delivery off (events are still stored).
    dispatcher_workers: int = Field(default=4, ge=0, le=256)
    dispatcher_poll_seconds: float = Field(default=0.2, gt=0)
    # Live streams (StreamEvents): how often a stream looks for events
    # published through other replicas, and how many one process serves
    # (each holds a server thread; see grpc_max_workers).
    stream_poll_seconds: float = Field(default=0.5, gt=0, le=10)
    max_streams: int = Field(default=64, ge=1, le=4096)
