"""Telemetry settings: environment variables SWARM_TELEMETRY_*."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

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
    # Ticketing (host:port): the LLM proxy checks that a call tagged with a
    # ticket comes from the agent holding its lease, and enforces the ticket's
    # cost cap (releasing it for review when reached). Empty: the ticket
    # header only attributes calls, and no ticket caps apply.
    ticketing_target: str = ""
    # vmhost (host:port): its revoked agents are polled so a terminated
    # agent's token stops working before it expires (swarmcommon.revocation).
    vmhost_target: str = ""
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
    # The LLM proxy (swarm_telemetry.proxy): an Anthropic Messages API endpoint
    # (host:port, HTTP; HTTPS with tls_dir's certificate outside insecure dev
    # mode) guests call with their agent token as the API key. It holds the
    # provider key and reserves each call's estimated cost in quota before
    # forwarding it. Empty: no proxy.
    llm_proxy_listen_address: str = ""
    # Where calls go, and the platform's provider key they go with (from a
    # Secret; never sent to guests).
    llm_proxy_upstream_url: str = "https://api.anthropic.com"
    llm_proxy_upstream_api_key: SecretStr = SecretStr("")
    llm_proxy_upstream_timeout_seconds: float = Field(default=600, gt=0)
    # The output estimate is the p90 of the tenant's last N calls to the model.
    llm_proxy_history_calls: int = Field(default=100, ge=1, le=10_000)
    # Blocking work (token checks, quota, the ledger) runs on this many threads.
    llm_proxy_threads: int = Field(default=64, ge=1, le=1024)
    # A settlement that fails (quota or the database down) is retried this
    # long before the call is logged for manual reconciliation.
    llm_proxy_settle_retry_seconds: float = Field(default=3600, gt=0)

    @model_validator(mode="after")
    def _proxy_has_a_key(self) -> Self:
        if self.llm_proxy_listen_address and not self.llm_proxy_upstream_api_key.get_secret_value():
            raise ValueError(
                "SWARM_TELEMETRY_LLM_PROXY_UPSTREAM_API_KEY is required when the LLM proxy is on "
                "(SWARM_TELEMETRY_LLM_PROXY_LISTEN_ADDRESS is set): the proxy forwards with it"
            )
        return self
