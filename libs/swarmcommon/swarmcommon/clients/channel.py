"""The one client channel every Swarm caller uses.

    ch = ServiceChannel("quota:50051", default_timeout=10)
    stub = QuotaServiceStub(ch.unary)        # traced; SwarmError on failure
    stream = EventsServiceStub(ch.streaming) # cancellable server streams

Every call through it:
- gets a deadline (`default_timeout`) unless the caller passed one, so no
  call can hang forever on a stuck peer;
- raises `SwarmError` (with the backend's code, message, ErrorInfo and
  RetryInfo) instead of `grpc.RpcError`, so callers handle one error family
  and a service can pass a dependency's answer through unchanged;
- is retried on UNAVAILABLE only (AIP-194): every mutating Swarm call carries
  a request_id the server deduplicates on, so a retry is safe;
- carries the caller's trace context (W3C traceparent).

Server-streaming calls go through `streaming`, which has no OpenTelemetry
client interceptor: that interceptor hands back a plain generator, and the
caller must keep a call object it can cancel (the gateway cancels the
backend stream when an SSE client hangs up).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import propagate
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from swarmcommon.errors import QuotaExceeded, SwarmError
from swarmcommon.limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from swarmcommon.tls import ClientTls

DEFAULT_TIMEOUT = 10.0

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

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", _RETRY_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
]

# Extra metadata per call; the mesh-identity work attaches credentials here.
MetadataSource = Callable[[], Sequence[tuple[str, str]]]


def trace_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (W3C traceparent)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def error_from_rpc(exc: grpc.RpcError) -> SwarmError:
    """A backend's error as our own, keeping its code, message and ErrorInfo."""
    code = exc.code()
    message = exc.details() or code.name
    reason, metadata, retry_after = None, {}, None
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:  # a status whose code disagrees with its details: keep the code
        status = None
    for detail in status.details if status else []:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "resource" in metadata:
        resets = metadata.get("resets_at")
        err: SwarmError = QuotaExceeded(
            metadata["resource"],
            int(metadata.get("current", 0)),
            int(metadata.get("limit", 0)),
            datetime.fromisoformat(resets.replace("Z", "+00:00")) if resets else None,
            message,
            retry_after,
        )
        err.metadata = metadata
        return err
    err = SwarmError(message, reason=reason or code.name, **metadata)
    err.code = code
    return err


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _UnaryOutcome:
    """A finished unary call whose `result()` raises SwarmError, not RpcError.

    grpc's interceptor machinery calls `result()` on what an interceptor
    returns, for blocking calls and futures alike; everything else (code,
    trailing metadata, callbacks) is the underlying call's."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._call.result(timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        exc = self._call.exception(timeout)
        return error_from_rpc(exc) if isinstance(exc, grpc.RpcError) else exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _StreamOutcome:
    """A server stream that raises SwarmError while iterating and can still be cancelled."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def wait_open(self) -> None:
        """Block until the server opened the stream (sent its headers); raise
        its refusal (bad arguments, no room) as SwarmError before any item."""
        self._call.initial_metadata()
        if self._call.done() and self._call.code() != grpc.StatusCode.OK:
            raise error_from_rpc(self._call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class SwarmClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Default deadline, extra metadata, and RpcError -> SwarmError, for every call."""

    def __init__(
        self,
        default_timeout: float,
        metadata: MetadataSource | None = None,
        *,
        propagate_trace: bool = False,
    ) -> None:
        self._timeout = default_timeout
        self._metadata = metadata
        self._propagate_trace = propagate_trace

    def _details(self, details: Any) -> _CallDetails:
        metadata = list(details.metadata or ())
        if self._propagate_trace and not any(k == "traceparent" for k, _ in metadata):
            metadata.extend(trace_metadata())
        if self._metadata is not None:
            metadata.extend(self._metadata())
        return _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else self._timeout,
            metadata or None,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return _UnaryOutcome(continuation(self._details(client_call_details), request))

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return _StreamOutcome(continuation(self._details(client_call_details), request))


class _Reconnecting(grpc.Channel):  # type: ignore[misc]
    """A TLS channel that moves to a new connection once the certificate
    files changed (rotation without restart). Calls in flight finish on the
    connection they started on, which is closed at the next rotation."""

    def __init__(self, target: str, tls: ClientTls) -> None:
        self._target = target
        self._tls = tls
        self._lock = threading.Lock()
        self._retired: list[grpc.Channel] = []
        self._channel, self._generation = self._connect()

    def _connect(self) -> tuple[grpc.Channel, int]:
        creds, generation = self._tls.credentials()
        return grpc.secure_channel(
            self._target, creds, options=CHANNEL_OPTIONS + self._tls.options()
        ), generation

    def current(self) -> tuple[grpc.Channel, int]:
        generation = self._tls.generation()
        with self._lock:
            if generation != self._generation:
                # Calls still running finish on the connection they started
                # on; the one retired at the previous rotation has had hours.
                for old in self._retired:
                    old.close()
                self._retired = [self._channel]
                self._channel, self._generation = self._connect()
            return self._channel, self._generation

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _LazyMultiCallable(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _LazyMultiCallable(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _LazyMultiCallable(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _LazyMultiCallable(self, "stream_stream", method, args, kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.current()[0].subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self.current()[0].unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            for ch in [*self._retired, self._channel]:
                ch.close()
            self._retired.clear()

    def __enter__(self) -> _Reconnecting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LazyMultiCallable:
    """A stub's handle on one method, bound to whichever connection is current."""

    def __init__(
        self, owner: _Reconnecting, kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ):
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._bound: Any = None
        self._generation = -1

    def _target(self) -> Any:
        channel, generation = self._owner.current()
        if generation != self._generation:
            self._bound = getattr(channel, self._kind)(self._method, *self._args, **self._kwargs)
            self._generation = generation
        return self._bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().future(*args, **kwargs)


class ServiceChannel:
    """One connection to a service, seen as a traced unary view and a streaming view.

    With `tls` the connection is mutual TLS with the workload's certificate
    (or, for a guest, TLS with no client certificate); without it, plaintext,
    which only a service in insecure dev mode accepts."""

    def __init__(
        self,
        target: str,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        metadata: MetadataSource | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.target = target
        self.default_timeout = default_timeout
        self.raw: grpc.Channel = (
            _Reconnecting(target, tls)
            if tls is not None
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        # The tracing interceptor runs inside ours, so its span sees the
        # RpcError and ours turns it into a SwarmError for the caller.
        traced: grpc.Channel = intercept_channel(self.raw, client_interceptor())  # type: ignore[no-untyped-call]
        self.unary: grpc.Channel = grpc.intercept_channel(
            traced, SwarmClientInterceptor(default_timeout, metadata)
        )
        self.streaming: grpc.Channel = grpc.intercept_channel(
            self.raw, SwarmClientInterceptor(default_timeout, metadata, propagate_trace=True)
        )

    def health(self, service: str = "", timeout: float = 2.0) -> str:
        """The peer's gRPC health status name (SERVING, NOT_SERVING, ...) or the
        status code that prevented an answer (UNAVAILABLE, DEADLINE_EXCEEDED)."""
        try:
            reply = health_pb2_grpc.HealthStub(self.unary).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except SwarmError as exc:
            return str(exc.code.name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def close(self) -> None:
        self.raw.close()
