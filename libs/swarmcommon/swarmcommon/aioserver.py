"""The asyncio server, for a service that parks calls (ticketing's long poll).

    handle = start_aio_server([service], listen_address="127.0.0.1:0",
                              security=security, executor=pool)
    handle.port; handle.loop   # the bound port; the event loop serving it
    handle.stop(grace)

It carries what swarmcommon.grpcserver's server carries (OpenTelemetry
tracing, SwarmError -> status with ErrorInfo, authorization from the same
access tables, health, reflection when enabled), but a call waiting on the
event loop costs a coroutine, not a thread. A servicer method may be either
kind: a coroutine runs on the loop; a plain method runs in `executor` with
the caller bound, as on the thread-pool server, so a servicer moves to the
loop one method at a time. The loop runs in its own thread: the rest of the
process (stores, background threads, tests) stays synchronous.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from prometheus_client.registry import Collector

from swarmcommon.authz import Gate, Rule, bind_caller, unbind_caller
from swarmcommon.grpcserver import GrpcService, ServerPlan, bind, server_options, status_of
from swarmcommon.metrics.serving import MetricsServer
from swarmcommon.security import ServerSecurity

R = TypeVar("R")

# A fleet that reconnects at once (the service restarted) sends thousands of
# calls within milliseconds; the asyncio server takes them off gRPC's queue
# one by one, and gRPC's defaults (1,000 waiting, 3,000 at most) would cancel
# the rest (CANCELLED, which clients do not retry).
PENDING_CALLS = [
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authorization and error mapping in one: who may call, as whom the
    servicer runs, and what status a failure answers with."""

    def __init__(self, plan: ServerPlan, executor: Executor) -> None:
        self._gate = Gate(plan.tables, plan.authenticator)
        self._domain_of = plan.domain_of
        self._executor = executor

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        found = self._gate.rule(details.method)
        if found is None:  # health: anyone
            return handler
        method, rule = found
        domain = self._domain_of(details.method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, rule, method, domain),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:  # reflection, when enabled
            return grpc.stream_stream_rpc_method_handler(
                self._stream(handler.stream_stream, rule, method, domain),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise ValueError(f"{method}: only unary and bidirectional methods are served here")

    def _unary(self, fn: Callable[..., Any], rule: Rule | None, method: str, domain: str) -> Any:
        is_coroutine = inspect.iscoroutinefunction(fn)

        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                token = bind_caller(self._gate.admit(context, rule, method))
                try:
                    if is_coroutine:
                        return await fn(request, context)
                    run = contextvars.copy_context().run
                    return await asyncio.get_running_loop().run_in_executor(
                        self._executor, run, fn, request, context
                    )
                finally:
                    unbind_caller(token)
            except Exception as exc:  # noqa: BLE001 - the one place errors become statuses
                await _abort(context, exc, domain)

        return behaviour

    def _stream(self, fn: Callable[..., Any], rule: Rule | None, method: str, domain: str) -> Any:
        async def behaviour(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                token = bind_caller(self._gate.admit(context, rule, method))
                try:
                    async for reply in fn(requests, context):
                        yield reply
                finally:
                    unbind_caller(token)
            except Exception as exc:  # noqa: BLE001
                await _abort(context, exc, domain)

        return behaviour


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, domain: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    status = rpc_status.to_status(status_of(exc, domain))
    await context.abort(status.code, status.details, status.trailing_metadata)


@dataclass
class AioServerHandle:
    server: grpc.aio.Server
    loop: asyncio.AbstractEventLoop
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    agent_port: int | None = None
    _thread: threading.Thread | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    metrics: MetricsServer | None = None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics is not None else None

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run `coroutine` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self, grace: float | None = 5.0) -> None:
        """Drain: report NOT_SERVING, finish in-flight RPCs, then stop the loop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.run(self.health.enter_graceful_shutdown())
        self.run(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join()
        self.loop.close()
        if self.metrics is not None:
            self.metrics.stop()


def start_aio_server(
    services: Sequence[GrpcService],
    *,
    listen_address: str,
    security: ServerSecurity,
    executor: Executor,
    agent_listen_address: str = "",
    reuse_port: bool = False,
    on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None,
    metrics_port: int | None = None,
    collectors: Sequence[Collector] = (),
) -> AioServerHandle:
    """`on_loop(loop)` runs before the server takes its first call;
    `metrics_port`: where /metrics is served (swarmcommon.grpcserver)."""
    plan = ServerPlan(services, security)
    # First: a port already taken fails before anything else started.
    metrics = plan.serve_metrics(listen_address, metrics_port, collectors)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-aio", daemon=True)
    thread.start()
    if on_loop is not None:
        on_loop(loop)

    async def build() -> AioServerHandle:
        server = grpc.aio.server(
            interceptors=[
                aio_server_interceptor(filter_=plan.trace_filter),  # type: ignore[no-untyped-call]
                GuardInterceptor(plan, executor),
            ],
            options=[*server_options(reuse_port), *PENDING_CALLS],
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = plan.register(server)
        port = bind(server, listen_address, security, client_certs=True)
        agent_port = (
            bind(server, agent_listen_address, security, client_certs=False) if agent_listen_address else None
        )
        await server.start()
        for name in ["", *names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        plan.announce(listen_address, port, agent_port)
        handle = AioServerHandle(server, loop, port, health_servicer, names, agent_port, thread)
        handle.metrics = metrics
        return handle

    try:
        return asyncio.run_coroutine_threadsafe(build(), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        if metrics is not None:
            metrics.stop()
        raise
