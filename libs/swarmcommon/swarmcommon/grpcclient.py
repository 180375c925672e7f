"""Client channels: traced, and retrying only UNAVAILABLE (AIP-194).

Retrying is safe because every mutating Swarm call carries a request_id the
server deduplicates on.
"""

from __future__ import annotations

import json
from datetime import datetime

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry import propagate
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from swarmcommon.errors import QuotaExceeded, SwarmError

_RETRY_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def raw_channel(target: str) -> grpc.Channel:
    """A channel without the tracing interceptor: for server-streaming calls,
    whose call object must stay cancellable (the interceptor hands back a
    plain generator). Pass `trace_metadata()` with each call."""
    return grpc.insecure_channel(
        target,
        options=[("grpc.service_config", _RETRY_CONFIG), ("grpc.enable_retries", 1)],
    )


def channel(target: str) -> grpc.Channel:
    # OpenTelemetry's interceptor plugs in through its own grpcext adapter.
    traced: grpc.Channel = intercept_channel(raw_channel(target), client_interceptor())  # type: ignore[no-untyped-call]
    return traced


def trace_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (W3C traceparent)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def error_from_rpc(exc: grpc.RpcError) -> SwarmError:
    """A backend's error as our own, keeping its code, message and ErrorInfo,
    so a service can pass a dependency's answer through to its caller."""
    code = exc.code()
    message = exc.details() or code.name
    reason, metadata, retry_after = None, {}, None
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        resets = metadata.get("resets_at")
        return QuotaExceeded(
            metadata.get("resource", "unknown"),
            int(metadata.get("current", 0)),
            int(metadata.get("limit", 0)),
            datetime.fromisoformat(resets.replace("Z", "+00:00")) if resets else None,
            message,
            retry_after,
        )
    err = SwarmError(message, reason=reason or code.name, **metadata)
    err.code = code
    return err
