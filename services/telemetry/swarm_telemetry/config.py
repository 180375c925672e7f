"""Telemetry settings: environment variables SWARM_TELEMETRY_*."""

from __future__ import annotations

from pydantic import Field

from swarmcommon.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("TELEMETRY")
    # The port guests reach: TLS without client certificates, an agent token
    # on every call (swarmcommon.authz). Empty: guests cannot reach this service.
    agent_listen_address: str = ""

    database_url: str = "sqlite:///var/telemetry.db"
    listen_address: str = "127.0.0.1:50054"
    # The quota service (host:port): budgets (COST_USD_MONTH) are read there
    # and recorded cost is charged to it. Empty: no budgets (every tenant is
    # unlimited), as in a single-tenant install.
    quota_target: str = ""
    # A downstream OTLP/gRPC receiver (host:port, e.g. Jaeger's 4317) that
    # gets a copy of every span received. Empty: no forwarding.
    forward_otlp_target: str = ""
    # Spans older than this are deleted (the cost ledger is kept: it is billing).
    span_retention_hours: float = Field(default=14 * 24, gt=0)
    # How often retention runs; 0 turns it off (tests run it by hand).
    retention_interval_seconds: float = Field(default=3600, ge=0)
    # Spans deleted per retention pass; a full pass is followed by another at once.
    retention_batch: int = Field(default=5000, ge=1)
    # Exports waiting to be forwarded; beyond it the oldest are dropped (counted).
    forward_queue_size: int = Field(default=1000, ge=1)
