"""Events settings: environment variables SWARM_EVENTS_*."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from swarm_events.retention import RetentionPolicy
from swarm_events.retry import RetryPolicy, parse_schedule
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
    # The whole of one attempt: resolving, connecting, sending and reading
    # the answer (not per read: a trickling endpoint is cut off at this).
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # An endpoint failing for this long is disabled (webhook.disabled).
    disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    # Delivery threads; 0 turns delivery off (events are still stored).
    dispatcher_workers: int = Field(default=4, ge=0, le=256)
    # How many of them one endpoint (webhook) may hold at once; 0: half of
    # them (at least one), so a slow endpoint never takes them all.
    dispatcher_workers_per_endpoint: int = Field(default=0, ge=0, le=256)
    dispatcher_poll_seconds: float = Field(default=0.2, gt=0)
    # Deliveries to one endpoint a worker claims (and records) at once: the
    # database work of a burst is paid per batch. A batch is sent in order
    # and ends early at a timeout, its rest going back untried.
    dispatcher_batch: int = Field(default=25, ge=1, le=500)
    # Live streams (StreamEvents): how often a stream looks for events
    # published through other replicas, how many one process serves (each
    # holds a server thread; see grpc_max_workers) and how many of those one
    # tenant may hold.
    stream_poll_seconds: float = Field(default=0.5, gt=0, le=10)
    max_streams: int = Field(default=64, ge=1, le=4096)
    max_streams_per_tenant: int = Field(default=16, ge=1, le=4096)
    # Retention: the event log, finished deliveries with their attempts, and
    # request ids. Pending deliveries (and what they need) are never purged.
    event_retention_days: float = Field(default=30, gt=0)
    delivery_retention_days: float = Field(default=30, gt=0)
    request_id_retention_hours: float = Field(default=24, gt=0)
    # How often retention runs; 0 turns it off.
    retention_interval_seconds: float = Field(default=3600, ge=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            schedule=parse_schedule(self.retry_schedule_seconds),
            jitter=self.retry_jitter,
            disable_after=timedelta(seconds=self.disable_after_seconds),
        )

    def retention_policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            events=timedelta(days=self.event_retention_days),
            deliveries=timedelta(days=self.delivery_retention_days),
            request_ids=timedelta(hours=self.request_id_retention_hours),
        )

    def workers_per_endpoint(self) -> int:
        if self.dispatcher_workers_per_endpoint:
            return self.dispatcher_workers_per_endpoint
        return max(1, self.dispatcher_workers // 2)
