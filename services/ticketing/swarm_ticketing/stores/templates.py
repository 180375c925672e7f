"""Agent templates and their immutable versions, and which version a
ticket's stage gets from the deployment in force (deployments themselves:
`stores.deployments`). A tenant sees the platform's templates and its own;
another tenant's are NOT_FOUND."""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.domain import AgentRole
from swarm_ticketing.marketplace_tables import marketplace_versions
from swarm_ticketing.stores import requests
from swarm_ticketing.stores.entitlements import installed_templates, is_listed, may_read_prompts, unsealed
from swarm_ticketing.tables import (
    agent_template_versions,
    agent_templates,
    template_deployments,
)
from swarm_ticketing.templates import (
    LIVE,
    MAX_PROMPT,
    MAX_SETTINGS_JSON,
    PLATFORM,
    Deployment,
    DeploymentStatus,
    Resolved,
    Template,
    TemplateVersion,
    takes_new_version,
)
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from swarmcommon.idempotency import Answer, RequestKey

log = logging.getLogger(__name__)

TT, TV, TD = agent_templates, agent_template_versions, template_deployments
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")


def agent_type(value: str) -> AgentRole:
    try:
        return AgentRole(value)
    except ValueError:
        known = ", ".join(r.value for r in AgentRole)
        raise InvalidArgument("agent_type", f"unknown agent type {value!r} (known: {known})") from None


def _settings(field: str, value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(raw) > MAX_SETTINGS_JSON:
        raise InvalidArgument(field, f"at most {MAX_SETTINGS_JSON} bytes of JSON")
    return raw


def _template(r: Any) -> Template:
    return Template(r.id, r.slug, r.agent_type, r.owner_tenant_id, r.name, r.description, r.created_at)


def _version(r: Any, readable: bool = True) -> TemplateVersion:
    """A version row; a marketplace version's sealed prompt opened, or every
    prompt blanked when the reader may not read them (`readable`)."""
    prompt = unsealed(r.prompt, getattr(r, "sealed_prompt", None)) if readable else ""
    return TemplateVersion(
        r.id,
        r.template_id,
        r.slug,
        r.agent_type,
        r.version,
        prompt,
        r.model,
        json.loads(r.parameters),
        json.loads(r.tools),
        r.author,
        r.created_at,
    )


def to_deployment(r: Any) -> Deployment:
    return Deployment(
        r.id,
        r.tenant_id,
        r.agent_type,
        r.version_id,
        r.stable_version_id,
        r.rollout_percent,
        DeploymentStatus(r.status),
        tuple(int(p) for p in r.ladder.split(",")),
        r.success_count,
        r.failure_count,
        r.created_by,
        r.created_at,
        r.updated_at,
        r.promoted_at,
    )


MV = marketplace_versions
_VERSION_COLUMNS = (*TV.c, TT.c.slug, TT.c.agent_type, MV.c.sealed_prompt)
_VERSION_FROM = TV.join(TT, TT.c.id == TV.c.template_id).outerjoin(MV, MV.c.version_id == TV.c.id)


class TemplateStore:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # -- templates and versions ---------------------------------------------------------------

    def create_template(
        self, owner: str, slug: str, kind: str, name: str, description: str, key: RequestKey | None = None
    ) -> Template:
        if not SLUG.match(slug):
            raise InvalidArgument(
                "slug", "3-64 lowercase letters, digits and dashes, not starting or ending in one"
            )
        kind = agent_type(kind).value

        def work(conn: Connection, now: datetime) -> tuple[Template, Answer]:
            row = {
                "id": str(uuid.uuid4()),
                "slug": slug,
                "agent_type": kind,
                "owner_tenant_id": owner,
                "name": name,
                "description": description,
                "created_at": now,
            }
            conn.execute(sa.insert(TT).values(row))
            return _template(Obj(row)), {"template_id": row["id"]}

        def replay(conn: Connection, answer: Answer) -> Template:
            return _template(conn.execute(sa.select(TT).where(TT.c.id == answer["template_id"])).one())

        try:
            return requests.LOG.run(self.db, key, self.clock.now, work, replay)
        except IntegrityError:
            raise AlreadyExists(f"a template with slug {slug!r} exists", slug=slug) from None

    def add_version(
        self,
        owner: str,
        slug: str,
        prompt: str,
        model: str,
        parameters: dict[str, Any],
        tools: dict[str, Any],
        author: str,
        key: RequestKey | None = None,
    ) -> TemplateVersion:
        """The template's next version number, immutable from now on."""
        if not prompt.strip() or len(prompt) > MAX_PROMPT:
            raise InvalidArgument("prompt", f"required, at most {MAX_PROMPT} characters")
        if len(model) > 128:
            raise InvalidArgument("model", "at most 128 characters ('' is the agent's configured model)")
        params, tool_settings = _settings("parameters", parameters), _settings("tools", tools)

        def work(conn: Connection, now: datetime) -> tuple[TemplateVersion, Answer]:
            template = self._owned(conn, owner, slug)
            if is_listed(conn, template.id):  # its versions are published (and priced) there
                raise FailedPrecondition(
                    f"template {slug!r} is a marketplace listing: publish its versions with "
                    "PUT /api/marketplace/templates/{id}",
                    slug=slug,
                )
            number = conn.execute(sa.select(sa.func.max(TV.c.version)).where(TV.c.template_id == template.id))
            row = {
                "id": str(uuid.uuid4()),
                "template_id": template.id,
                "version": (number.scalar() or 0) + 1,
                "prompt": prompt,
                "model": model,
                "parameters": params,
                "tools": tool_settings,
                "author": author,
                "created_at": now,
            }
            conn.execute(sa.insert(TV).values(row))
            made = _version(Obj({**row, "slug": template.slug, "agent_type": template.agent_type}))
            return made, {"version_id": made.id}

        def replay(conn: Connection, answer: Answer) -> TemplateVersion:
            row = conn.execute(
                sa.select(*_VERSION_COLUMNS).select_from(_VERSION_FROM).where(TV.c.id == answer["version_id"])
            ).one()
            return _version(row)

        for attempt in range(3):  # two authors numbering at once: the loser takes the next number
            try:
                return requests.LOG.run(self.db, key, self.clock.now, work, replay)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def template(self, viewer: str, slug: str) -> tuple[Template, list[TemplateVersion]]:
        def read(conn: Connection) -> tuple[Template, list[TemplateVersion]]:
            template = visible_template(conn, viewer, slug)
            rows = conn.execute(
                sa.select(*_VERSION_COLUMNS)
                .select_from(_VERSION_FROM)
                .where(TV.c.template_id == template.id)
                .order_by(TV.c.version)
            ).all()
            readable = template.owner_tenant_id in (viewer, PLATFORM) or may_read_prompts(
                conn, viewer, template.id
            )
            return template, [_version(r, readable) for r in rows]

        return self.db.transaction(read, write=False)

    def _owned(self, conn: Connection, owner: str, slug: str) -> Template:
        row = conn.execute(sa.select(TT).where(TT.c.slug == slug, TT.c.owner_tenant_id == owner)).first()
        if row is None:
            raise NotFound(f"template {slug!r} not found", slug=slug)
        return _template(row)

    # -- which version a stage gets ------------------------------------------------------------

    def resolve(self, tenant: str, kind: str, ticket_id: str) -> Resolved:
        """The version a ticket's `kind` stage must run with (sticky: the same
        for every attempt while the deployment's share does not move past it)."""
        return self.db.transaction(lambda conn: resolve_in(conn, tenant, kind, ticket_id), write=False)


def visible_template(conn: Connection, viewer: str, slug: str) -> Template:
    """Platform templates, the viewer's own and those it installed from the
    marketplace; anyone else's is NOT_FOUND."""
    row = conn.execute(
        sa.select(TT).where(
            TT.c.slug == slug,
            sa.or_(TT.c.owner_tenant_id.in_([viewer, PLATFORM]), TT.c.id.in_(installed_templates(viewer))),
        )
    ).first()
    if row is None:
        raise NotFound(f"template {slug!r} not found", slug=slug)
    return _template(row)


_IN_FORCE = (
    sa.select(TD)
    .where(
        TD.c.tenant_id.in_([sa.bindparam("scope"), PLATFORM]),
        TD.c.agent_type == sa.bindparam("kind"),
        TD.c.status != DeploymentStatus.DISABLED.value,
    )
    # The tenant's own first (false sorts before true), then the newest.
    .order_by((TD.c.tenant_id == PLATFORM).asc(), TD.c.seq.desc())
    .limit(1)
)


def latest_deployment(conn: Connection, tenant: str, kind: str) -> Deployment | None:
    """The deployment in force for a tenant and type: its own newest that
    is not disabled, else the newest for all tenants (one query: it is on
    every claim's path)."""
    row = conn.execute(_IN_FORCE, {"scope": tenant, "kind": kind}).first()
    return to_deployment(row) if row is not None else None


# Versions never change once written: the claim path reads each from the
# database once per process. Ids are random UUIDs, so one cache serves any
# number of databases (tests run several in one process).
_VERSIONS: dict[str, TemplateVersion] = {}
_VERSIONS_KEPT = 4096


def version_by_id(conn: Connection, version_id: str) -> TemplateVersion:
    cached = _VERSIONS.get(version_id)
    if cached is not None:
        return cached
    row = conn.execute(
        sa.select(*_VERSION_COLUMNS).select_from(_VERSION_FROM).where(TV.c.id == version_id)
    ).one()
    version = _version(row)
    if len(_VERSIONS) >= _VERSIONS_KEPT:
        _VERSIONS.clear()
    _VERSIONS[version_id] = version
    return version


def resolve_in(conn: Connection, tenant: str, kind: str, ticket_id: str) -> Resolved:
    """`TemplateStore.resolve` inside the caller's transaction (the claim's)."""
    current = latest_deployment(conn, tenant, kind)
    if current is None:
        raise FailedPrecondition(f"no agent template is deployed for type {kind!r}", agent_type=kind)
    new = takes_new_version(current.status, current.rollout_percent, current.id, ticket_id)
    version_id = current.version_id if new else current.stable_version_id
    assert version_id is not None  # only a deployment born full has no stable version
    # Only a rollout under way is judged, so only its outcomes are counted: a
    # full deployment (the platform's, for every tenant) would otherwise be
    # one row every stage in the fleet updates — measured: the claims bench
    # fell from 208 to 91 tickets/s on that row's lock.
    return Resolved(version_by_id(conn, version_id), current.id, new and current.status in LIVE)


class Obj:
    """Attribute access over a row dict we just wrote."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
