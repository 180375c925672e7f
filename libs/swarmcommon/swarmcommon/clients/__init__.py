"""One typed client per Swarm service, all over the same kind of channel.

    with QuotaClient("quota:50051") as quota:
        quota.reserve_vm("acme", owner="vmhost/agents/a1", request_id="spawn:a1")
        quota.stub.GetTenant(...)   # any other call: same deadline and errors

Every call gets a default deadline and raises `SwarmError` (never
`grpc.RpcError`); see `swarmcommon.clients.channel`. The typed methods cover
what more than one caller needs; `stub` reaches the rest of the contract.
"""

from swarmcommon.clients.base import ServiceClient
from swarmcommon.clients.channel import (
    DEFAULT_TIMEOUT,
    ServiceChannel,
    error_from_rpc,
    trace_metadata,
)
from swarmcommon.clients.events import EventsClient
from swarmcommon.clients.quota import QuotaClient
from swarmcommon.clients.telemetry import TelemetryClient
from swarmcommon.clients.ticketing import TicketingClient
from swarmcommon.clients.vmhost import VmHostClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "EventsClient",
    "QuotaClient",
    "ServiceChannel",
    "ServiceClient",
    "TelemetryClient",
    "TicketingClient",
    "VmHostClient",
    "error_from_rpc",
    "trace_metadata",
]
