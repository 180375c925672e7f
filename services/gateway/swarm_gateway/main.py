"""The gateway application: routers, error handlers, tracing. Kept tiny."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException as StarletteHTTPException

from swarm_gateway.auth import KeyCache
from swarm_gateway.backends import Backends
from swarm_gateway.config import Settings
from swarm_gateway.dashboard import app as dashboard
from swarm_gateway.errors import http_error_response, swarm_error_handler, validation_error_response
from swarm_gateway.guard import RequestGuard
from swarm_gateway.routers import (
    admin,
    agents,
    health,
    learnings,
    marketplace,
    metrics,
    quota,
    snapshots,
    telemetry,
    templates,
    ticketing,
    webhooks,
)
from swarmcommon.errors import SwarmError


def create_app(settings: Settings, backends: Backends | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.backends.close()

    app = FastAPI(
        title="Swarm API",
        version="1.0.0",
        description=(
            "Projects, tickets, dead letters, quota usage, webhooks and events for the tenant of "
            "the API key; "
            "tenant and API-key administration under /admin for operators."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backends = backends or Backends.connect(settings)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.add_exception_handler(SwarmError, swarm_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)
    for module in (ticketing, snapshots, learnings, templates, marketplace, quota, admin, health):
        app.include_router(module.router)
    app.include_router(telemetry.router)
    app.include_router(webhooks.router)
    app.include_router(webhooks.events_router)
    app.include_router(agents.router)
    # The web dashboard at / (server-rendered pages over these same routes).
    dashboard.install(app, settings)
    # Credentials and body size are checked before FastAPI reads a body.
    app.add_middleware(RequestGuard)
    # GET /metrics, and every request counted (those the guard refuses too).
    metrics.instrument(app)
    # W3C trace context from the HTTP request continues into the gRPC calls.
    FastAPIInstrumentor.instrument_app(app)
    return app
