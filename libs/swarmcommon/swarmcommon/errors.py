"""One root exception for the whole platform, with typed subclasses.

Domain code raises these; `swarmcommon.grpcserver` maps them to gRPC status
codes carrying a google.rpc.ErrorInfo (AIP-193) in one interceptor, and the
gateway maps those codes to HTTP in one handler. Nothing else sets status
codes by hand.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import grpc


class SwarmError(Exception):
    """Root of every error a Swarm service reports to its callers."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        # ErrorInfo metadata is a map<string, string>; callers may pass any
        # printable value and get its string form.
        self.metadata: dict[str, str] = {k: _metadata_value(v) for k, v in metadata.items() if v is not None}


def _metadata_value(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


class InvalidArgument(SwarmError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, **metadata: object) -> None:
        super().__init__(f"{field}: {message}", field=field, **metadata)  # type: ignore[arg-type]
        self.field = field


class NotFound(SwarmError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(SwarmError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(SwarmError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Unauthenticated(SwarmError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(SwarmError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(SwarmError):
    """Transient: the caller should retry with backoff (AIP-194)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class QuotaExceeded(SwarmError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXCEEDED"

    def __init__(
        self,
        resource: str,
        current: int,
        limit: int,
        resets_at: datetime | None,
        message: str | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(
            message or f"{resource} limit reached ({current}/{limit})",
            resource=resource,
            current=current,
            limit=limit,
            resets_at=resets_at,
        )
        self.resource = resource
        self.current = current
        self.limit = limit
        self.resets_at = resets_at
        # Time until the window resets, on the refusing service's clock.
        self.retry_after = retry_after
