"""Agent templates and their canary deployments, project snapshots with
rollback, and the template marketplace.

Ticketing has no call listing a tenant's templates or deployments, so the
Templates page looks one up by slug or id (the ids are in the creating
answer and in template.* events)."""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from swarm_gateway.dashboard.pages import LIST_PAGE, CurrentViewer, Form, PageRoute, back, render
from swarm_gateway.marketplace_models import InstallRequest, ReviewCreate
from swarm_gateway.models import UUID_PATTERN
from swarm_gateway.routers import marketplace, snapshots, templates, ticketing
from swarm_gateway.routers.snapshots import ProjectId, SnapshotId
from swarm_gateway.routers.templates import DeploymentId, SlugPath
from swarm_gateway.snapshot_models import RollbackCreate
from swarm_gateway.template_models import SLUG_PATTERN, PromoteRequest, RollbackRequest
from swarmcommon.errors import InvalidArgument

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _matching(value: str, pattern: str, field: str, what: str) -> str:
    value = value.strip()
    if value and not re.fullmatch(pattern, value):
        raise InvalidArgument(field, f"must be {what}")
    return value


@router.get("/templates", response_class=HTMLResponse)
def template_lookup(
    request: Request, viewer: CurrentViewer, slug: str = "", deployment: str = ""
) -> HTMLResponse:
    b = request.app.state.backends
    slug = _matching(slug, SLUG_PATTERN, "slug", "a template's slug (lower-case letters, digits, dashes)")
    deployment = _matching(deployment, UUID_PATTERN, "deployment", "a deployment's id")
    detail = templates.get_template(slug, viewer.caller, b) if slug else None
    dep = templates.get_deployment(deployment, viewer.caller, b) if deployment else None
    return render(request, "templates.html", viewer, slug=slug, detail=detail, deployment=dep)


@router.post("/deployments/{deployment_id}/promote")
def promote(request: Request, deployment_id: DeploymentId, viewer: CurrentViewer, fields: Form) -> Response:
    percent = fields.get("rollout_percent", "").strip()
    if percent and not percent.isdigit():
        raise InvalidArgument("rollout_percent", "must be a whole number from 0 to 100")
    body = PromoteRequest(rollout_percent=int(percent or 0))
    templates.promote(deployment_id, body, viewer.caller, request.app.state.backends, str(uuid.uuid4()))
    return back(f"/templates?deployment={deployment_id}", "promoted")


@router.post("/deployments/{deployment_id}/rollback")
def roll_back(request: Request, deployment_id: DeploymentId, viewer: CurrentViewer, fields: Form) -> Response:
    body = RollbackRequest(reason=fields.get("reason", "").strip() or "rolled back from the dashboard")
    templates.rollback(deployment_id, body, viewer.caller, request.app.state.backends, str(uuid.uuid4()))
    return back(f"/templates?deployment={deployment_id}", "rolled-back")


@router.get("/snapshots", response_class=HTMLResponse)
def snapshot_list(request: Request, viewer: CurrentViewer, project_id: str = "") -> HTMLResponse:
    b = request.app.state.backends
    project_id = _matching(project_id, UUID_PATTERN, "project_id", "a project's id")
    projects = ticketing.list_projects(viewer.caller, b, LIST_PAGE).items
    listed = snapshots.list_snapshots(project_id, viewer.caller, b, LIST_PAGE).items if project_id else []
    return render(
        request, "snapshots.html", viewer, projects=projects, project_id=project_id, snapshots=listed
    )


@router.get("/snapshots/{project_id}/{snapshot_id}", response_class=HTMLResponse)
def rollback_plan(
    request: Request, project_id: ProjectId, snapshot_id: SnapshotId, viewer: CurrentViewer
) -> HTMLResponse:
    plan = snapshots.plan_rollback(project_id, snapshot_id, viewer.caller, request.app.state.backends)
    return render(request, "snapshot_plan.html", viewer, project_id=project_id, plan=plan, done=None)


@router.post("/snapshots/{project_id}/{snapshot_id}/rollback", response_class=HTMLResponse)
def confirm_rollback(
    request: Request, project_id: ProjectId, snapshot_id: SnapshotId, viewer: CurrentViewer, fields: Form
) -> HTMLResponse:
    b = request.app.state.backends
    # The head the user saw in the plan: the rollback refuses if it moved since.
    body = RollbackCreate(snapshot_id=snapshot_id, expected_head=fields.get("expected_head", ""))
    done = snapshots.rollback(project_id, body, viewer.caller, b, str(uuid.uuid4()))
    plan = snapshots.plan_rollback(project_id, snapshot_id, viewer.caller, b)
    return render(request, "snapshot_plan.html", viewer, project_id=project_id, plan=plan, done=done)


@router.get("/marketplace", response_class=HTMLResponse)
def market(request: Request, viewer: CurrentViewer, q: str = "") -> HTMLResponse:
    if len(q) > 200:
        raise InvalidArgument("q", "must be at most 200 characters")
    listings = marketplace.search_templates(
        viewer.caller, request.app.state.backends, LIST_PAGE, category=None, tag=None, q=q, sort="rating"
    )
    return render(request, "marketplace.html", viewer, listings=listings.items, q=q)


@router.post("/marketplace/{slug}/install")
def install(request: Request, slug: SlugPath, viewer: CurrentViewer, fields: Form) -> Response:
    marketplace.install_template(
        slug, InstallRequest(config={}), viewer.caller, request.app.state.backends, str(uuid.uuid4())
    )
    return back("/marketplace", "installed")


@router.post("/marketplace/{listing_id}/review")
def review(request: Request, listing_id: DeploymentId, viewer: CurrentViewer, fields: Form) -> Response:
    rating = fields.get("rating", "")
    if rating not in {"1", "2", "3", "4", "5"}:
        raise InvalidArgument("rating", "must be 1 to 5 stars")
    body = ReviewCreate(rating=int(rating), title=fields.get("title", ""), body=fields.get("body", ""))
    marketplace.review_template(
        listing_id, body, viewer.caller, request.app.state.backends, str(uuid.uuid4())
    )
    return back("/marketplace", "reviewed")
