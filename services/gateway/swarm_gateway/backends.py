"""The services behind the gateway: one typed client each (swarmcommon.clients).

Every call through them gets the default deadline (`backend_timeout_seconds`)
and fails as `SwarmError`, which errors.py turns into the HTTP answer; no
route passes a timeout or catches a gRPC error itself.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

from swarm_gateway.config import Settings
from swarmcommon.clients import (
    EventsClient,
    QuotaClient,
    ServiceClient,
    TelemetryClient,
    TicketingClient,
    VmHostClient,
)

HEALTH_TIMEOUT_SECONDS = 2.0


@dataclass
class Backends:
    ticketing: TicketingClient
    quota: QuotaClient
    events: EventsClient
    telemetry: TelemetryClient
    vmhost: VmHostClient

    @classmethod
    def connect(cls, settings: Settings) -> Backends:
        # Channels connect lazily: a backend that is down only fails the
        # routes that need it (503), never the gateway's start-up.
        timeout = settings.backend_timeout_seconds
        tls = settings.client_tls()
        return cls(
            ticketing=TicketingClient(settings.ticketing_target, default_timeout=timeout, tls=tls),
            quota=QuotaClient(settings.quota_target, default_timeout=timeout, tls=tls),
            events=EventsClient(settings.events_target, default_timeout=timeout, tls=tls),
            telemetry=TelemetryClient(settings.telemetry_target, default_timeout=timeout, tls=tls),
            vmhost=VmHostClient(settings.vmhost_target, default_timeout=timeout, tls=tls),
        )

    def clients(self) -> dict[str, ServiceClient]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def health(self) -> dict[str, str]:
        """Each backend's gRPC health status (or the code that kept it from answering)."""
        clients = self.clients()
        # All at once: an unreachable backend takes its retries' backoff to fail.
        with ThreadPoolExecutor(max_workers=len(clients), thread_name_prefix="readyz") as pool:
            states = pool.map(lambda c: c.health(timeout=HEALTH_TIMEOUT_SECONDS), clients.values())
            return dict(zip(clients, states, strict=True))

    def close(self) -> None:
        for client in self.clients().values():
            client.close()
