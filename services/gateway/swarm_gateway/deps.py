"""What routes depend on, defined once (FastAPI template's `api/deps.py`):

    def list_tickets(caller: CurrentCaller, b: BackendsDep, page: Paging) -> ...
    def create_project(body: ProjectCreate, caller: CurrentCaller, b: BackendsDep, request_id: RequestId)

The caller is authenticated by guard.py before the body is read; these only
hand its result to the route.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from swarm_gateway.auth import Caller, KeyCache
from swarm_gateway.backends import Backends
from swarm_gateway.config import Settings
from swarm_gateway.guard import ADMIN, CALLER
from swarm_gateway.models import NAME_ID_PATTERN
from swarmcommon.errors import Unauthenticated


def backends(request: Request) -> Backends:
    b: Backends = request.app.state.backends
    return b


def settings(request: Request) -> Settings:
    s: Settings = request.app.state.settings
    return s


def key_cache(request: Request) -> KeyCache:
    cache: KeyCache = request.app.state.key_cache
    return cache


def current_caller(request: Request) -> Caller:
    caller = getattr(request.state, CALLER, None)
    if not isinstance(caller, Caller):
        # Only a route outside /api could get here: a wiring mistake, refused.
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <api key>'")
    return caller


def require_admin(request: Request) -> None:
    if getattr(request.state, ADMIN, False) is not True:
        raise Unauthenticated("missing credentials: send 'Authorization: Bearer <admin token>'")


@dataclass(frozen=True)
class Page:
    size: int
    token: str


def paging(
    page_size: Annotated[int, Query(ge=0, le=1000, description="0 means the default (50)")] = 0,
    page_token: Annotated[
        str, Query(max_length=4096, description="next_page_token of the previous page, with the same filters")
    ] = "",
) -> Page:
    return Page(page_size, page_token)


def request_id(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=NAME_ID_PATTERN,
            description=(
                "Retrying with the same key returns the first result and writes (and charges "
                "quota) once; without one, each HTTP request is its own"
            ),
        ),
    ] = None,
) -> str:
    """The backend's request_id: the caller's Idempotency-Key, else one made
    for this HTTP request, so the channel retrying a call whose answer was
    lost repeats nothing (FastAPI resolves a dependency once per request)."""
    return idempotency_key or str(uuid.uuid4())


BackendsDep = Annotated[Backends, Depends(backends)]
SettingsDep = Annotated[Settings, Depends(settings)]
KeyCacheDep = Annotated[KeyCache, Depends(key_cache)]
CurrentCaller = Annotated[Caller, Depends(current_caller)]
AdminOnly = Depends(require_admin)
Paging = Annotated[Page, Depends(paging)]
RequestId = Annotated[str, Depends(request_id)]
