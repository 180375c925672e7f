"""What every dashboard page shares: templates, the signed-in viewer, forms
with their CSRF check, and errors rendered as pages.

Pages call the REST routers' own functions with the viewer's `Caller`, so a
page shows exactly what the API answers for the same key, tenant-scoped by
the same code: the tenant comes only from the session.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

import grpc
from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from swarm_gateway.auth import Caller, authenticate
from swarm_gateway.dashboard.session import COOKIE, Session, SessionCodec
from swarm_gateway.deps import Page
from swarm_gateway.errors import HTTP_STATUS
from swarmcommon.errors import SwarmError

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# One page of a list: the dashboard shows the newest 100 and says when there are more.
LIST_PAGE = Page(100, "")
FORM_TYPES = ("application/x-www-form-urlencoded", "")
# What a page says after a form succeeded, by the code its redirect names.
FLASHES = {
    "redriven": "Redriven: the ticket is queued again.",
    "updated": "Saved.",
    "deleted": "Deleted.",
    "redelivered": "Queued for redelivery.",
    "promoted": "Promoted.",
    "rolled-back": "Rolled back.",
    "installed": "Installed.",
    "reviewed": "Thanks: review saved.",
}


class SignedOut(Exception):
    """No valid session: the browser is sent to the login page."""


class CsrfRejected(Exception):
    """A form without this session's CSRF token."""


@dataclass(frozen=True)
class Viewer:
    caller: Caller
    session: Session

    @property
    def tenant_id(self) -> str:
        return self.caller.tenant_id


def codec(request: Request) -> SessionCodec:
    c: SessionCodec = request.app.state.dashboard_sessions
    return c


def viewer(request: Request) -> Viewer:
    """The signed-in tenant: the session's key authenticated as REST does (auth.py)."""
    session = codec(request).decode(request.cookies.get(COOKIE))
    if session is None:
        raise SignedOut
    try:
        caller, _ = authenticate(request.app.state.backends, request.app.state.key_cache, session.api_key)
    except SwarmError as exc:
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            raise SignedOut from None
        raise
    if caller.tenant_id != session.tenant_id:
        raise SignedOut  # the key was re-issued to another tenant: never mix them
    return Viewer(caller, session)


CurrentViewer = Annotated[Viewer, Depends(viewer)]


async def form(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (the last value of each)."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in FORM_TYPES:
        raise CsrfRejected
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


async def checked_form(request: Request) -> dict[str, str]:
    """A POSTed form whose CSRF token is this session's; else 403."""
    fields = await form(request)
    session = codec(request).decode(request.cookies.get(COOKIE))
    if session is None:
        raise SignedOut
    if not session.csrf_matches(fields.get("csrf", "")):
        raise CsrfRejected
    return fields


Form = Annotated[dict[str, str], Depends(checked_form)]


def render(
    request: Request, template: str, viewer: Viewer | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context.update(
        viewer=viewer,
        csrf=viewer.session.csrf if viewer else "",
        flash=FLASHES.get(request.query_params.get("flash", ""), ""),
        path=request.url.path,
    )
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    # Pages hold tenant data: never cached, never framed.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return response


def back(url: str, flash: str = "") -> RedirectResponse:
    """After a POST: see the page again (303, so a reload does not resend the
    form), with one of FLASHES' fixed messages (never text from the URL)."""
    assert not flash or flash in FLASHES, flash
    joiner = "&" if "?" in url else "?"
    target = f"{url}{joiner}{urlencode({'flash': flash})}" if flash else url
    return RedirectResponse(target, status_code=303)


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "form"
    return f"{where}: {first.get('msg', 'invalid')}"


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", None, status_code=status, status=status, message=message)


class PageRoute(APIRoute):
    """A dashboard route: failures become pages, not the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignedOut:
                response = RedirectResponse("/login", status_code=303)
                response.delete_cookie(COOKIE, path="/")
                return response
            except CsrfRejected:
                return error_page(
                    request, 403, "The form's security token is missing or stale: reload the page."
                )
            except SwarmError as exc:
                status = HTTP_STATUS.get(exc.code, 500)
                message = exc.message if status < 500 or status == 503 else "internal error"
                return error_page(request, status, message)
            except ValidationError as exc:
                return error_page(request, 400, validation_message(exc))

        return handle
