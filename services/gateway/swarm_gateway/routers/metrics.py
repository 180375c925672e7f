"""GET /metrics (Prometheus; no auth, not in the API docs) and the HTTP
request series it shows: requests by method, route template and status
class, and their latency (swarmcommon.metrics).

    metrics.instrument(app)   # in create_app, once

The route is the template (`/api/tickets/{ticket_id}`), never the path a
caller sent: ids in paths would make a series per id. A request no route
matches is `unmatched`, whatever its path.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarmcommon.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS
from swarmcommon.metrics.serving import exposition, scrape_registry

router = APIRouter(include_in_schema=False)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


@router.get("/metrics")
def metrics(request: Request) -> Response:
    body, content_type = exposition(request.app.state.metrics_registry)
    return Response(body, media_type=content_type)


def instrument(app: FastAPI) -> None:
    """Serve /metrics and count every request; call after the other
    middleware is added, so requests they refuse (401, 413) count too."""
    app.state.metrics_registry = scrape_registry(["gateway"])
    app.include_router(router)
    app.add_middleware(RequestMetrics, app_routes=app)


class RequestMetrics:
    """Pure ASGI (a streaming response passes through untouched); latency is
    from the request's arrival to the end of its response."""

    def __init__(self, app: ASGIApp, app_routes: FastAPI) -> None:
        self.app = app
        self.fastapi = app_routes
        self._documented: list[tuple[str, re.Pattern[str], set[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # the app raised before it answered

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = self.template(scope)
            HTTP_REQUESTS.labels(method=method, route=route, status_class=f"{status // 100}xx").inc()
            HTTP_REQUEST_SECONDS.labels(method=method, route=route).observe(time.perf_counter() - started)

    def template(self, scope: Scope) -> str:
        """The matched route's path template, which the router leaves in the
        scope. A request the guard refused never reached the router: the
        guard refuses only under /api and /admin, whose routes are all in
        the OpenAPI document, so its templates are matched here instead."""
        found = scope.get("route")
        if found is not None and isinstance(getattr(found, "path", None), str):
            return str(found.path)
        if self._documented is None:
            paths = self.fastapi.openapi().get("paths", {})
            self._documented = [
                (path, compile_path(path)[0], {m.upper() for m in methods}) for path, methods in paths.items()
            ]
        partial = UNMATCHED
        for path, regex, methods in self._documented:
            if regex.match(scope["path"]):
                if scope["method"] in methods:
                    return path
                partial = path if partial == UNMATCHED else partial  # the path, not the method (405)
        return partial
