"""Client channels: traced, and retrying only UNAVAILABLE (AIP-194).

Retrying is safe because every mutating Swarm call carries a request_id the
server deduplicates on.
"""

from __future__ import annotations

import json

import grpc
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

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


def channel(target: str) -> grpc.Channel:
    raw = grpc.insecure_channel(
        target,
        options=[("grpc.service_config", _RETRY_CONFIG), ("grpc.enable_retries", 1)],
    )
    # OpenTelemetry's interceptor plugs in through its own grpcext adapter.
    traced: grpc.Channel = intercept_channel(raw, client_interceptor())  # type: ignore[no-untyped-call]
    return traced
