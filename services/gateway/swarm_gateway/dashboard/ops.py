"""Usage (quota and LLM cost), webhooks with their delivery log, and agents."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from swarm.vmhost.v1 import vmhost_pb2 as vpb
from swarm_gateway.dashboard.pages import LIST_PAGE, CurrentViewer, Form, PageRoute, back, render
from swarm_gateway.deps import Page
from swarm_gateway.models import UUID_PATTERN
from swarm_gateway.routers import quota, telemetry, webhooks
from swarm_gateway.routers.webhooks import WebhookId
from swarm_gateway.webhook_models import SendTest, WebhookCreate
from swarmcommon.errors import InvalidArgument, SwarmError

router = APIRouter(route_class=PageRoute, include_in_schema=False)

COST_GROUPS = (("project", "Cost by project"), ("agent_type", "Cost by agent type"), ("day", "Cost by day"))


def _enum(enum: Any, number: int, prefix: str) -> str:
    return str(enum.Name(number)).removeprefix(prefix).lower()


@router.get("/usage", response_class=HTMLResponse)
def usage(request: Request, viewer: CurrentViewer) -> HTMLResponse:
    b = request.app.state.backends
    quotas = quota.get_usage(viewer.caller, b)
    charts = []
    for group_by, title in COST_GROUPS:
        page = telemetry.get_usage_summary(viewer.caller, b, Page(30, ""), group_by=group_by)  # type: ignore[arg-type]
        top = max((r.totals.cost_usd for r in page.rows), default=0.0)
        charts.append({"title": title, "group_by": group_by, "page": page, "top": top})
    return render(request, "usage.html", viewer, quotas=quotas, charts=charts)


@router.get("/webhooks", response_class=HTMLResponse)
def webhook_list(request: Request, viewer: CurrentViewer) -> HTMLResponse:
    page = webhooks.list_webhooks(viewer.caller, request.app.state.backends, LIST_PAGE, state=None)
    return render(request, "webhooks.html", viewer, webhooks=page.items, created=None, secret="")


@router.post("/webhooks", response_class=HTMLResponse)
def add_webhook(request: Request, viewer: CurrentViewer, fields: Form) -> HTMLResponse:
    events = [e.strip() for e in fields.get("events", "*").replace(",", " ").split() if e.strip()]
    body = WebhookCreate(
        url=fields.get("url", "").strip(), events=events or ["*"], description=fields.get("description", "")
    )
    b = request.app.state.backends
    created = webhooks.create_webhook(body, viewer.caller, b, str(uuid.uuid4()))
    page = webhooks.list_webhooks(viewer.caller, b, LIST_PAGE, state=None)
    # Rendered, not redirected: the signing secret is shown this once.
    return render(
        request, "webhooks.html", viewer, webhooks=page.items, created=created.webhook, secret=created.secret,
        status_code=201,
    )  # fmt: skip


@router.get("/webhooks/{webhook_id}", response_class=HTMLResponse)
def webhook_detail(request: Request, webhook_id: WebhookId, viewer: CurrentViewer) -> HTMLResponse:
    b = request.app.state.backends
    hook = webhooks.get_webhook(webhook_id, viewer.caller, b)
    attempts = webhooks.list_delivery_attempts(
        webhook_id, viewer.caller, b, LIST_PAGE, event_id=None, delivery_id=None, outcome=None
    )
    return render(request, "webhook.html", viewer, webhook=hook, attempts=attempts.items, tested=None)


@router.post("/webhooks/{webhook_id}/test", response_class=HTMLResponse)
def send_test(request: Request, webhook_id: WebhookId, viewer: CurrentViewer, fields: Form) -> HTMLResponse:
    b = request.app.state.backends
    body = SendTest(event_type=fields.get("event_type", "").strip() or "webhook.test")
    tested = webhooks.send_test_event(
        webhook_id, viewer.caller, b, request.app.state.settings, str(uuid.uuid4()), body
    )
    hook = webhooks.get_webhook(webhook_id, viewer.caller, b)
    attempts = webhooks.list_delivery_attempts(
        webhook_id, viewer.caller, b, LIST_PAGE, event_id=None, delivery_id=None, outcome=None
    )
    return render(request, "webhook.html", viewer, webhook=hook, attempts=attempts.items, tested=tested)


@router.post("/webhooks/{webhook_id}/delete")
def delete(request: Request, webhook_id: WebhookId, viewer: CurrentViewer, fields: Form) -> Response:
    webhooks.delete_webhook(webhook_id, viewer.caller, request.app.state.backends, str(uuid.uuid4()))
    return back("/webhooks", "deleted")


@router.post("/webhooks/{webhook_id}/redeliver")
def redeliver(request: Request, webhook_id: WebhookId, viewer: CurrentViewer, fields: Form) -> Response:
    delivery_id = fields.get("delivery_id", "")
    if not re.fullmatch(UUID_PATTERN, delivery_id):
        raise InvalidArgument("delivery_id", "must be a delivery's id")
    webhooks.redeliver(delivery_id, viewer.caller, request.app.state.backends, str(uuid.uuid4()))
    return back(f"/webhooks/{webhook_id}", "redelivered")


@router.get("/agents", response_class=HTMLResponse)
def agents(request: Request, viewer: CurrentViewer) -> HTMLResponse:
    vmhost = request.app.state.backends.vmhost
    error = ""
    rows: list[dict[str, Any]] = []
    healing: list[dict[str, Any]] = []
    try:
        listed = vmhost.stub.ListAgents(vpb.ListAgentsRequest(tenant_id=viewer.tenant_id, page_size=200))
        healed = vmhost.stub.ListHealingActions(
            vpb.ListHealingActionsRequest(tenant_id=viewer.tenant_id, page_size=100)
        )
    except SwarmError as exc:
        # The agent host is optional to every other page: say so here only.
        error = f"The agent host did not answer ({exc.code.name}): {exc.message}"
    else:
        rows = [
            {
                "agent": a,
                "role": _enum(vpb.AgentRole, a.role, "AGENT_ROLE_"),
                "driver": _enum(vpb.Driver, a.driver, "DRIVER_"),
                "state": _enum(vpb.AgentState, a.state, "AGENT_STATE_"),
            }
            for a in listed.agents
        ]
        healing = [
            {
                "action": h,
                "check": _enum(vpb.HealthCheck, h.check, "HEALTH_CHECK_"),
                "type": _enum(vpb.HealingActionType, h.type, "HEALING_ACTION_TYPE_"),
                "outcome": _enum(vpb.HealingOutcome, h.outcome, "HEALING_OUTCOME_"),
            }
            for h in healed.actions
        ]
    return render(request, "agents.html", viewer, agents=rows, healing=healing, error=error)
