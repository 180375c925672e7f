"""Signing in with a tenant API key, and out."""

from __future__ import annotations

import hmac
import secrets

import anyio
import grpc
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from swarm_gateway.auth import authenticate
from swarm_gateway.dashboard.pages import (
    CurrentViewer,
    Form,
    PageRoute,
    codec,
    form,
    render,
)
from swarm_gateway.dashboard.session import COOKIE, LOGIN_COOKIE
from swarmcommon.errors import SwarmError

router = APIRouter(route_class=PageRoute, include_in_schema=False)

MAX_KEY_LENGTH = 512


def _login_page(request: Request, error: str = "", status_code: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", None, status_code=status_code, login_csrf=token, error=error)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    fields = await form(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    submitted = fields.get("csrf", "")
    if not expected or not hmac.compare_digest(submitted.encode(), expected.encode()):
        return _login_page(request, "The form expired: try again.", status_code=403)
    secret = fields.get("api_key", "").strip()
    if not secret or len(secret) > MAX_KEY_LENGTH:
        return _login_page(request, "Paste your tenant API key.", status_code=400)
    try:
        caller, _ = await anyio.to_thread.run_sync(
            authenticate, request.app.state.backends, request.app.state.key_cache, secret
        )
    except SwarmError as exc:
        # The backend's refusal arrives as its status code, not always as the subclass.
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            return _login_page(request, "That API key is not valid (unknown or revoked).", status_code=401)
        if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return _login_page(request, "This tenant's API rate limit is reached: try again later.", 429)
        raise
    sessions = codec(request)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        sessions.encode(sessions.new(caller.tenant_id, secret)),
        max_age=int(sessions.lifetime),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def sign_out(viewer: CurrentViewer, fields: Form) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
