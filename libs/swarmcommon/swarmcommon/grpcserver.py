"""Every service starts, reports health, maps errors and stops the same way.

    handle = start_server([service], listen_address="127.0.0.1:0", max_workers=64)
    handle.port                       # the bound port
    run_until_signal(handle, grace)   # blocks until SIGTERM/SIGINT

The server carries, outermost first: OpenTelemetry tracing (continues the
caller's traceparent), then the error interceptor that turns `SwarmError`
into a status code with google.rpc.ErrorInfo (and QuotaFailure for quota
errors), then authorization (swarmcommon.authz: who is calling, and may
they call this method). Unexpected exceptions are logged and become
INTERNAL without leaking internals to the caller.

It listens with mutual TLS on `listen_address` and, for services guests
reach, with server-only TLS on `agent_listen_address` (guests hold a token,
not a certificate); plaintext only in insecure dev mode. Given a
`metrics_port`, it serves the services' Prometheus series on GET /metrics
there, on the same host (swarmcommon.metrics.serving), until it stops.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, full_method_name, negate, service_name
from prometheus_client.registry import Collector

from swarmcommon.authz import Access, Authenticator, AuthzInterceptor, allow, check_access
from swarmcommon.errors import QuotaExceeded, SwarmError
from swarmcommon.limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from swarmcommon.metrics.serving import MetricsPortUnavailable, MetricsServer, listen_host
from swarmcommon.pki import SERVICES
from swarmcommon.security import ServerSecurity
from swarmcommon.tls import server_credentials

log = logging.getLogger(__name__)

ERROR_DOMAIN_PREFIX = "swarm."


@dataclass(frozen=True)
class GrpcService:
    """A servicer ready to register: its full name and how to add it."""

    full_name: str
    register: Callable[[grpc.Server], None]
    domain: str = "swarm"
    # Who may call each method (swarmcommon.authz); every method needs an entry.
    access: Access = field(default_factory=dict)
    # False for a span sink (OTLP ingestion): tracing its own calls would
    # feed every export back into itself.
    traced: bool = True
    # Methods the server does not trace by itself (a long poll that mostly
    # waits and finds nothing: its servicer traces the calls worth a span).
    untraced_methods: frozenset[str] = frozenset()


def to_status(exc: SwarmError, domain: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata)
    details = [_pack(info)]
    if isinstance(exc, QuotaExceeded):
        failure = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(subject=exc.resource, description=exc.message)
            ]
        )
        details.append(_pack(failure))
        if exc.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(max(exc.retry_after, timedelta(0)))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=exc.code.value[0], message=exc.message, details=details)


def status_of(exc: BaseException, domain: str) -> status_pb2.Status:
    """The status a failed call answers with: a SwarmError's own, else INTERNAL
    (logged here, with nothing of the internals told to the caller)."""
    if isinstance(exc, SwarmError):
        return to_status(exc, domain)
    log.exception("unhandled error in RPC", exc_info=exc)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, domain_of: Callable[[str], str]) -> None:
        self._domain_of = domain_of

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        domain = self._domain_of(handler_call_details.method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, domain),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, domain),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:  # reflection, when enabled
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, domain),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @staticmethod
    def _abort(context: grpc.ServicerContext, exc: BaseException, domain: str) -> None:
        context.abort_with_status(rpc_status.to_status(status_of(exc, domain)))

    def _wrap_unary(self, fn: Callable[..., Any], domain: str) -> Callable[..., Any]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return fn(request, context)
            except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
                if _is_abort(exc):
                    raise
                self._abort(context, exc, domain)

        return behaviour

    def _wrap_stream(self, fn: Callable[..., Iterator[Any]], domain: str) -> Callable[..., Iterator[Any]]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from fn(request, context)
            except Exception as exc:  # noqa: BLE001
                if _is_abort(exc):
                    raise
                self._abort(context, exc, domain)

        return behaviour


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort raises a bare Exception subclass we must let through.
    return type(exc).__name__ == "_AbortError" or (type(exc) is Exception and not exc.args)


class Serving(Protocol):
    """A running server of either kind (this module's, swarmcommon.aioserver's)."""

    @property
    def port(self) -> int: ...

    def stop(self, grace: float | None = 5.0) -> None: ...


@dataclass
class ServerHandle:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: list[str]
    agent_port: int | None = None
    metrics: MetricsServer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics is not None else None

    def stop(self, grace: float | None = 5.0) -> None:
        """Drain: report NOT_SERVING, finish in-flight RPCs, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()  # last: a scrape while draining still answers


def start_server(
    services: Sequence[GrpcService],
    *,
    listen_address: str,
    security: ServerSecurity,
    agent_listen_address: str = "",
    max_workers: int = 128,
    reuse_port: bool = False,
    metrics_port: int | None = None,
    collectors: Sequence[Collector] = (),
) -> ServerHandle:
    """`collectors`: series of this server's own for its /metrics (None: no /metrics)."""
    plan = ServerPlan(services, security)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[
            server_interceptor(filter_=plan.trace_filter),  # type: ignore[no-untyped-call]
            ErrorInterceptor(plan.domain_of),
            AuthzInterceptor(plan.tables, plan.authenticator),
        ],
        options=server_options(reuse_port),
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = plan.register(server)
    port = bind(server, listen_address, security, client_certs=True)
    agent_port = (
        bind(server, agent_listen_address, security, client_certs=False) if agent_listen_address else None
    )
    try:
        metrics = plan.serve_metrics(listen_address, metrics_port, collectors)
    except MetricsPortUnavailable:
        server.stop(None)  # its ports are bound: give them back
        raise
    server.start()
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    plan.announce(listen_address, port, agent_port)
    return ServerHandle(
        server=server,
        port=port,
        health=health_servicer,
        service_names=names,
        agent_port=agent_port,
        metrics=metrics,
    )


def server_options(reuse_port: bool) -> list[tuple[str, int]]:
    return [
        # Off by default so two services can never silently share a port.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ]


class ServerPlan:
    """What a server of these services checks and carries, whichever kind it
    is (thread pool here, asyncio in swarmcommon.aioserver)."""

    def __init__(self, services: Sequence[GrpcService], security: ServerSecurity) -> None:
        self.services = services
        self.security = security
        self._domains = {s.full_name: s.domain for s in services}
        for s in services:
            check_access(s.full_name, s.access)
        self.tables: dict[str, Access] = {s.full_name: s.access for s in services}
        if security.reflection:
            self.tables[reflection.SERVICE_NAME] = {"ServerReflectionInfo": allow(*SERVICES, operators=True)}
        self.authenticator = Authenticator(security.trust_domain, security.verifier, security.insecure_dev)
        untraced = [service_name(s.full_name) for s in services if not s.traced] + [
            full_method_name(f"/{s.full_name}/{m}") for s in services for m in s.untraced_methods
        ]
        self.trace_filter = negate(any_of(*untraced)) if untraced else None
        self.names = [s.full_name for s in services]

    def domain_of(self, method: str) -> str:
        # method is "/package.Service/Method"
        return self._domains.get(method.lstrip("/").split("/", 1)[0], "swarm")

    def register(self, server: Any) -> list[str]:
        for service in self.services:
            service.register(server)
        if self.security.reflection:
            reflection.enable_server_reflection(
                [*self.names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        return self.names

    def serve_metrics(
        self, listen_address: str, port: int | None, collectors: Sequence[Collector]
    ) -> MetricsServer | None:
        """/metrics of these services (their domain "swarm.<name>" names their registry)."""
        if port is None:
            return None
        names = [s.domain.removeprefix("swarm.") for s in self.services]
        return MetricsServer.start(names, host=listen_host(listen_address), port=port, collectors=collectors)

    def announce(self, address: str, port: int, agent_port: int | None) -> None:
        log.info(
            "gRPC server listening",
            extra={
                "address": address,
                "port": port,
                "agent_port": agent_port,
                "services": self.names,
                "transport": "plaintext (insecure dev)" if self.security.insecure_dev else "mutual TLS",
            },
        )


def bind(server: Any, address: str, security: ServerSecurity, *, client_certs: bool) -> int:
    if security.tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(security.tls, client_certs=client_certs))
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address}")
    return int(port)


def run_until_signal(handle: Serving, grace: float, on_stop: Sequence[Callable[[], None]] = ()) -> None:
    """Serve until SIGTERM or SIGINT, then drain gracefully."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("signal received, draining", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    for callback in on_stop:
        callback()
    handle.stop(grace)
    log.info("server stopped")
