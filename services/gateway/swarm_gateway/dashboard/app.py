"""Adds the dashboard to the gateway: its routers, static files and session codec."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from swarm_gateway.config import Settings
from swarm_gateway.dashboard import live, login, ops, rollout, work
from swarm_gateway.dashboard.session import SessionCodec

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI, settings: Settings) -> None:
    app.state.dashboard_sessions = SessionCodec(
        settings.dashboard_session_key, settings.dashboard_session_hours * 3600
    )
    for module in (login, work, ops, rollout, live):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")
