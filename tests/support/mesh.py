"""A real local mesh: quota, events, telemetry and ticketing gRPC servers on
ephemeral ports and the gateway served by uvicorn on a real HTTP port.

`Mesh.gateway(**settings)` serves a second gateway on the same backends with
other settings; `LossyProxy` sits between a gateway and a backend and loses
chosen answers after the backend committed, the way a dropped connection or
a load balancer's 503 does, so the gateway's channel retries the call.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute

from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_gateway.config import Settings as GatewaySettings
from swarm_gateway.main import create_app
from swarm_quota import server as quota_server
from swarm_quota.config import Settings as QuotaSettings
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarm_ticketing import server as ticketing_server
from swarm_ticketing.config import Settings as TicketingSettings
from swarmcommon.db import Database
from swarmcommon.grpcclient import channel, raw_channel
from swarmcommon.limits import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from tests.support.waiting import eventually

ADMIN_TOKEN = "test-admin-token"


class LiveServer:
    """uvicorn in a thread on an ephemeral loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        eventually(lambda: self.server.started, timeout=10, interval=0.01, what="gateway started")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Mesh:
    base_url: str
    app: FastAPI
    ticketing: tpb_grpc.TicketingServiceStub
    http: httpx.Client
    quota_db: Database
    events: events_server.Events
    telemetry: telemetry_server.Telemetry
    # Where tenants' local repositories may be made (<root>/<tenant>/…); None: nowhere.
    repository_root: Path | None = None

    def admin(self, method: str, path: str, **kw: object) -> httpx.Response:
        return self.http.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kw)  # type: ignore[arg-type]

    def tenant_with_key(self, tenant_id: str, plan: str = "pro", **overrides: int) -> str:
        """Create a tenant through the admin API and return a fresh API key for it."""
        r = self.admin("POST", "/admin/tenants", json={"id": tenant_id, "plan": plan, "overrides": overrides})
        assert r.status_code == 201, r.text
        r = self.admin("POST", f"/admin/tenants/{tenant_id}/api-keys", json={"display_name": "test"})
        assert r.status_code == 201, r.text
        secret: str = r.json()["secret"]
        return secret

    def as_key(self, key: str, base_url: str = "") -> httpx.Client:
        return httpx.Client(
            base_url=base_url or self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    @contextmanager
    def gateway(self, **settings: Any) -> Iterator[str]:
        """Another gateway on these backends, with `settings` changed; yields its base URL."""
        app = create_app(self.app.state.settings.model_copy(update=settings))
        with LiveServer(app) as base_url:
            yield base_url


class LossyProxy:
    """A gRPC proxy to `target` that forwards every unary call and, for the
    methods told to, throws the backend's answer away and says UNAVAILABLE —
    after the backend has done the work. gRPC clients retry UNAVAILABLE."""

    def __init__(self, target: str) -> None:
        self.upstream = raw_channel(target)
        self.to_lose: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ],
        )
        self.server.add_generic_rpc_handlers([_Forward(self)])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def lose_answers(self, method: str, times: int = 1) -> None:
        """`method` is the full name, e.g. /swarm.ticketing.v1.TicketingService/CreateProject."""
        with self._lock:
            self.to_lose[method] += times

    def forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith(("grpc-", ":"))]
        call = self.upstream.unary_unary(method)
        try:
            reply: bytes = call(request, metadata=metadata, timeout=context.time_remaining())
        except grpc.RpcError as exc:
            context.set_trailing_metadata(exc.trailing_metadata())  # type: ignore[attr-defined]
            context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]
        with self._lock:
            self.forwarded[method] += 1
            lose = self.to_lose[method] > 0
            if lose:
                self.to_lose[method] -= 1
        if lose:
            context.abort(grpc.StatusCode.UNAVAILABLE, "proxy: the answer was lost on the way back")
        return reply

    def close(self) -> None:
        self.server.stop(grace=1).wait()
        self.upstream.close()


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, proxy: LossyProxy) -> None:
        self.proxy = proxy

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self.proxy.forward(method, request, context)
        )


@contextmanager
def lossy_proxy(target: str) -> Iterator[LossyProxy]:
    proxy = LossyProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()


def run_mesh(
    url_quota: str,
    url_ticketing: str,
    url_events: str,
    url_telemetry: str,
    auth_cache_seconds: float = 0.2,
    repository_root: Path | None = None,
) -> Iterator[Mesh]:
    """`repository_root`: where tenants' local repositories may live
    (<root>/<tenant>/…), for projects whose git the platform itself reads."""
    # The real clock: rate-limit headers are wall-clock epoch seconds.
    quota_app = quota_server.start(
        QuotaSettings(
            database_url=url_quota, listen_address="127.0.0.1:0", api_key_pepper=secrets.token_hex(32)
        )
    )
    events_app = events_server.start(
        EventsSettings(
            database_url=url_events,
            listen_address="127.0.0.1:0",
            webhook_allow_networks="127.0.0.0/8",
            retry_schedule_seconds="0.05,0.05",
            retry_jitter=0,
        )
    )
    telemetry_app = telemetry_server.start(
        TelemetrySettings(
            database_url=url_telemetry,
            listen_address="127.0.0.1:0",
            quota_target=f"127.0.0.1:{quota_app.port}",
            retention_interval_seconds=0,
        )
    )
    ticketing_app = ticketing_server.start(
        TicketingSettings(
            database_url=url_ticketing,
            listen_address="127.0.0.1:0",
            reaper_interval_seconds=0,
            quota_target=f"127.0.0.1:{quota_app.port}",
            events_target=f"127.0.0.1:{events_app.port}",
            local_repository_root=str(repository_root or ""),
        )
    )
    app = create_app(
        GatewaySettings(
            ticketing_target=f"127.0.0.1:{ticketing_app.port}",
            quota_target=f"127.0.0.1:{quota_app.port}",
            events_target=f"127.0.0.1:{events_app.port}",
            telemetry_target=f"127.0.0.1:{telemetry_app.port}",
            admin_token=ADMIN_TOKEN,
            auth_cache_seconds=auth_cache_seconds,
        )
    )
    tch = channel(f"127.0.0.1:{ticketing_app.port}")
    try:
        with LiveServer(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
            yield Mesh(
                base_url,
                app,
                tpb_grpc.TicketingServiceStub(tch),
                http,
                quota_app.db,
                events_app,
                telemetry_app,
                repository_root,
            )
    finally:
        tch.close()
        ticketing_app.stop(grace=1)
        events_app.stop(grace=1)
        telemetry_app.stop(grace=1)
        quota_app.stop(grace=1)


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every route of the app. FastAPI keeps an included router behind a
    wrapper in `app.routes` (its `original_router`), so a plain walk of
    `app.routes` finds none of them: this one looks inside."""

    def walk(routes: list[Any], prefix: str) -> Iterator[APIRoute]:
        for r in routes:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                yield from walk(inner.routes, prefix + r.include_context.prefix)
            elif isinstance(r, APIRoute):
                assert not prefix, "routers are included without a prefix of their own"
                yield r

    found = list(walk(list(app.routes), ""))
    assert found, "no routes found: FastAPI changed how it keeps them"
    return found


def routes_tagged(mesh: Mesh, tags: set[str]) -> set[tuple[str, str]]:
    """(method, path) of every documented route carrying one of `tags`."""
    return {
        (m, r.path)
        for r in api_routes(mesh.app)
        if r.include_in_schema and tags & {str(t) for t in r.tags}
        for m in r.methods
    }
