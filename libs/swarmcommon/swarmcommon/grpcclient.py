"""Bare channels that raise `grpc.RpcError`: for tests of the wire itself and
for tools that must see raw statuses. Services and agents use the typed
clients in `swarmcommon.clients`, whose calls get deadlines and raise
`SwarmError`.
"""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from swarmcommon.clients.channel import CHANNEL_OPTIONS, error_from_rpc, trace_metadata

__all__ = ["channel", "error_from_rpc", "raw_channel", "trace_metadata"]


def raw_channel(target: str) -> grpc.Channel:
    """No tracing interceptor: server-streaming calls stay cancellable."""
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def channel(target: str) -> grpc.Channel:
    """Traced (the caller's trace context travels), retrying UNAVAILABLE."""
    traced: grpc.Channel = intercept_channel(raw_channel(target), client_interceptor())  # type: ignore[no-untyped-call]
    return traced
