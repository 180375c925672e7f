"""Projects, tickets (audit trail and trace) and the dead-letter queue."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from swarm_gateway.dashboard.pages import LIST_PAGE, CurrentViewer, Form, PageRoute, back, render
from swarm_gateway.deps import Page
from swarm_gateway.models import ProjectPublic, RedriveRequest, TicketPublic, TicketUpdate
from swarm_gateway.routers import telemetry, ticketing
from swarm_gateway.routers.ticketing import ProjectId, TicketId
from swarm_gateway.telemetry_models import TicketTracePublic
from swarmcommon.errors import InvalidArgument, NotFound

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# Every event of a ticket fits one page in practice; more says "and more".
EVENTS_PAGE = Page(500, "")
TICKET_STATES = ("blocked", "ready", "in_progress", "done", "quarantined", "cancelled")


def _operator_reason(fields: dict[str, str], default: str) -> str:
    return fields.get("reason", "").strip() or default


def dag_levels(tickets: list[TicketPublic]) -> list[list[TicketPublic]]:
    """Tickets in layers: a ticket's layer is one past its deepest dependency's."""
    by_id = {t.id: t for t in tickets}
    level: dict[str, int] = {}

    def depth(t: TicketPublic, seen: frozenset[str]) -> int:
        if t.id in level:
            return level[t.id]
        deps = [by_id[d] for d in t.depends_on if d in by_id and d not in seen]
        level[t.id] = 1 + max((depth(d, seen | {t.id}) for d in deps), default=-1)
        return level[t.id]

    for t in tickets:
        depth(t, frozenset())
    layers: list[list[TicketPublic]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for t in sorted(tickets, key=lambda t: (-t.priority, t.name)):
        layers[level[t.id]].append(t)
    return layers


def waterfall_rows(trace: TicketTracePublic) -> list[dict[str, Any]]:
    """Each span's bar as offset and width in % of the whole trace."""
    total = max((trace.end_time - trace.start_time).total_seconds(), 1e-9)

    def pct(moment: datetime) -> float:
        return max(0.0, min(100.0, (moment - trace.start_time).total_seconds() / total * 100))

    return [
        {
            "span": s,
            "left": pct(s.start_time),
            "width": max(0.4, pct(s.end_time) - pct(s.start_time)),
            "hot": s.depth > 0 and s.share_of_total >= 0.5,
        }
        for s in trace.spans
    ]


@router.get("/", response_class=HTMLResponse)
def home(viewer: CurrentViewer) -> Response:
    return RedirectResponse("/projects", status_code=303)


@router.get("/projects", response_class=HTMLResponse)
def projects(request: Request, viewer: CurrentViewer) -> HTMLResponse:
    page = ticketing.list_projects(viewer.caller, request.app.state.backends, LIST_PAGE)
    return render(request, "projects.html", viewer, projects=page.items, more=bool(page.next_page_token))


def percent(p: ProjectPublic) -> float:
    return 100.0 * p.done_count / p.ticket_count if p.ticket_count else 0.0


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project(request: Request, project_id: ProjectId, viewer: CurrentViewer) -> HTMLResponse:
    b = request.app.state.backends
    proj = ticketing.get_project(project_id, viewer.caller, b)
    progress = ticketing.project_progress(project_id, viewer.caller, b)
    tickets = ticketing.list_tickets(viewer.caller, b, Page(1000, ""), project_id=project_id)
    return render(
        request,
        "project.html",
        viewer,
        project=proj,
        progress=progress,
        tickets=tickets.items,
        layers=dag_levels(tickets.items),
        names={t.id: t.name for t in tickets.items},
        more=bool(tickets.next_page_token),
    )


@router.get("/tickets", response_class=HTMLResponse)
def tickets(request: Request, viewer: CurrentViewer, state: str = "") -> HTMLResponse:
    if state and state not in TICKET_STATES:
        raise InvalidArgument("state", f"must be one of {', '.join(TICKET_STATES)}")
    page = ticketing.list_tickets(
        viewer.caller,
        request.app.state.backends,
        LIST_PAGE,
        state=state or None,  # type: ignore[arg-type]
    )
    return render(
        request, "tickets.html", viewer, tickets=page.items, state=state, states=TICKET_STATES,
        more=bool(page.next_page_token),
    )  # fmt: skip


def _trace(viewer: CurrentViewer, ticket_id: str, b: Any) -> tuple[TicketTracePublic | None, str]:
    """The ticket's trace and its text waterfall; (None, "") before any span arrived."""
    try:
        trace = telemetry.get_ticket_trace(ticket_id, viewer.caller, b, format="json")
        text = telemetry.get_ticket_trace(ticket_id, viewer.caller, b, format="text")
    except NotFound:
        return None, ""
    assert isinstance(trace, TicketTracePublic) and not isinstance(text, TicketTracePublic)
    return trace, bytes(text.body).decode()


@router.get("/tickets/{ticket_id}", response_class=HTMLResponse)
def ticket(request: Request, ticket_id: TicketId, viewer: CurrentViewer) -> HTMLResponse:
    b = request.app.state.backends
    t = ticketing.get_ticket(ticket_id, viewer.caller, b)
    events = ticketing.list_ticket_events(ticket_id, viewer.caller, b, EVENTS_PAGE)
    trace, waterfall = _trace(viewer, ticket_id, b)
    return render(
        request,
        "ticket.html",
        viewer,
        ticket=t,
        events=events.items,
        trace=trace,
        rows=waterfall_rows(trace) if trace else [],
        waterfall=waterfall,
    )


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(request: Request, viewer: CurrentViewer) -> HTMLResponse:
    page = ticketing.list_dead_letters(viewer.caller, request.app.state.backends, LIST_PAGE)
    return render(request, "dead_letters.html", viewer, tickets=page.items, more=bool(page.next_page_token))


@router.get("/dead-letters/{ticket_id}", response_class=HTMLResponse)
def review_dead_letter(request: Request, ticket_id: TicketId, viewer: CurrentViewer) -> HTMLResponse:
    b = request.app.state.backends
    t = ticketing.get_ticket(ticket_id, viewer.caller, b)
    events = ticketing.list_ticket_events(ticket_id, viewer.caller, b, EVENTS_PAGE)
    # The failure history: every failure, quarantine and redrive, oldest first.
    failures = [e for e in events.items if any(w in e.event_type for w in ("fail", "quarant", "redriv"))]
    return render(request, "dead_letter.html", viewer, ticket=t, failures=failures)


@router.post("/dead-letters/{ticket_id}/retry")
def retry_dead_letter(request: Request, ticket_id: TicketId, viewer: CurrentViewer, fields: Form) -> Response:
    body = RedriveRequest(
        ticket_ids=[ticket_id], reason=_operator_reason(fields, "retried from the dashboard")
    )
    ticketing.redrive(body, viewer.caller, request.app.state.backends, str(uuid.uuid4()))
    return back("/dead-letters", "redriven")


@router.post("/dead-letters/{ticket_id}/edit")
def edit_dead_letter(request: Request, ticket_id: TicketId, viewer: CurrentViewer, fields: Form) -> Response:
    priority = fields.get("priority", "").strip()
    try:
        number = int(priority) if priority else None
    except ValueError:
        raise InvalidArgument("priority", "must be a whole number from -1000 to 1000") from None
    body = TicketUpdate(
        description=fields.get("description"),
        priority=number,
        reason=_operator_reason(fields, "edited from the dashboard"),
    )
    ticketing.update_ticket(ticket_id, body, viewer.caller, request.app.state.backends, str(uuid.uuid4()))
    return back(f"/dead-letters/{ticket_id}", "updated")
