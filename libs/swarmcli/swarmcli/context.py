"""The settings the root command resolved, and the clients built from them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from swarmcli.client import Api, usage_error
from swarmcli.config import Settings


def settings(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    found = root.obj
    if not isinstance(found, Settings):
        raise usage_error("internal: the root command did not resolve the settings")
    return found


@contextmanager
def tenant_api(ctx: typer.Context) -> Iterator[Api]:
    """The gateway as the tenant whose API key we hold (usage error without one)."""
    s = settings(ctx)
    if not s.api_key:
        raise usage_error("no API key: pass --api-key, set SWARM_API_KEY, or put api_key in the config file")
    api = Api(s.url, s.api_key)
    try:
        yield api
    finally:
        api.close()


@contextmanager
def admin_api(ctx: typer.Context) -> Iterator[Api]:
    """The gateway's /admin surface, with the operator's admin token."""
    s = settings(ctx)
    if not s.admin_token:
        raise usage_error(
            "no admin token: pass --admin-token, set SWARM_ADMIN_TOKEN, or put admin_token in the config file"
        )
    api = Api(s.url, s.admin_token)
    try:
        yield api
    finally:
        api.close()
