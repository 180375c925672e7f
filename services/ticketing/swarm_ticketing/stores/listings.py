"""Marketplace listings as their authors publish and update them (rules in
`swarm_ticketing.marketplace`), and the reads every marketplace call shares.

A listing makes its own agent template (slug unique platform-wide) and
every version of it: the first when it is published, the next each time an
update carries a prompt (`AddTemplateVersion` refuses a listed template). A
paid version's prompt is sealed in `marketplace_versions`; the template
version row holds a placeholder.

Both calls take a request id (`stores.requests`): a retry answers with the
listing as it is now (recorded: its id; an update also records the version
it published) and writes nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.marketplace import (
    SEALED_PLACEHOLDER,
    Category,
    Draft,
    Installation,
    Listing,
    ListingFields,
    Pricing,
    PromptSealer,
    Visibility,
)
from swarm_ticketing.marketplace_tables import (
    marketplace_installations,
    marketplace_listings,
    marketplace_versions,
)
from swarm_ticketing.stores import requests
from swarm_ticketing.stores.templates import SLUG, agent_type
from swarm_ticketing.tables import (
    agent_template_versions,
    agent_templates,
)
from swarm_ticketing.templates import MAX_PROMPT, MAX_SETTINGS_JSON
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import AlreadyExists, InvalidArgument, NotFound
from swarmcommon.idempotency import Answer, RequestKey

L, MV, MI = marketplace_listings, marketplace_versions, marketplace_installations
TT, TV = agent_templates, agent_template_versions
# The listing columns with the template's agent type, as `to_listing` reads them.
LISTING = sa.select(L, TT.c.agent_type).join(TT, TT.c.id == L.c.template_id)


def to_listing(r: Any) -> Listing:
    return Listing(
        r.id,
        r.slug,
        r.template_id,
        r.agent_type,
        r.author_tenant_id,
        r.name,
        r.description,
        Category(r.category),
        tuple(json.loads(r.tags)),
        Visibility(r.visibility),
        Pricing(r.pricing_model),
        r.price_usd_micros,
        json.loads(r.config_schema),
        r.version,
        r.install_count,
        r.rating_sum,
        r.rating_count,
        r.created_at,
        r.updated_at,
    )


def to_installation(r: Any, slug: str) -> Installation:
    return Installation(
        r.id, r.listing_id, slug, r.tenant_id, r.version, json.loads(r.config), r.purchase_id, r.created_at
    )


def listing_where(conn: Connection, *where: Any, lock: bool = False) -> Listing:
    query = LISTING.where(*where)
    if lock:
        query = query.with_for_update(of=L)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("marketplace template not found")
    return to_listing(row)


def visible_listing(conn: Connection, viewer: str, where: Any) -> Listing:
    """A listing `viewer` may see: its own, any not private, or one it
    installed. Another tenant's private listing is NOT_FOUND, as is a
    listing that does not exist."""
    installed = sa.exists().where(MI.c.listing_id == L.c.id, MI.c.tenant_id == viewer)
    return listing_where(
        conn,
        where,
        sa.or_(L.c.author_tenant_id == viewer, L.c.visibility != Visibility.PRIVATE.value, installed),
    )


def installation_of(conn: Connection, listing: Listing, tenant: str) -> Installation | None:
    row = conn.execute(sa.select(MI).where(MI.c.listing_id == listing.id, MI.c.tenant_id == tenant)).first()
    return to_installation(row, listing.slug) if row is not None else None


def _current(conn: Connection, outcome: Answer) -> Listing:
    """A replayed publish or update: the listing it made or changed, as it is now."""
    return listing_where(conn, L.c.id == outcome["listing_id"])


def _json(field: str, value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(raw) > MAX_SETTINGS_JSON:
        raise InvalidArgument(field, f"at most {MAX_SETTINGS_JSON} bytes of JSON")
    return raw


def _check_draft(draft: Draft) -> tuple[str, str]:
    if not draft.prompt.strip() or len(draft.prompt) > MAX_PROMPT:
        raise InvalidArgument("prompt", f"required, at most {MAX_PROMPT} characters")
    if len(draft.model) > 128:
        raise InvalidArgument("model", "at most 128 characters ('' is the agent's configured model)")
    return _json("parameters", draft.parameters), _json("tools", draft.tools)


class Listings:
    def __init__(self, db: Database, clock: Clock, sealer: PromptSealer) -> None:
        self.db = db
        self.clock = clock
        self.sealer = sealer

    def publish(
        self,
        author: str,
        slug: str,
        kind: str,
        fields: ListingFields,
        draft: Draft,
        key: RequestKey | None = None,
    ) -> Listing:
        """A new listing, its template and the template's version 1."""
        if not SLUG.match(slug):
            raise InvalidArgument(
                "slug", "3-64 lowercase letters, digits and dashes, not starting or ending in one"
            )
        role = agent_type(kind).value
        settings = _check_draft(draft)
        sealed = self.sealer.seal(draft.prompt) if fields.pricing.is_paid else None

        def work(conn: Connection, now: datetime) -> tuple[Listing, Answer]:
            if conn.execute(sa.select(TT.c.id).where(TT.c.slug == slug)).first() is not None:
                raise AlreadyExists(f"a template with slug {slug!r} exists", slug=slug)
            template_id, listing_id = str(uuid.uuid4()), str(uuid.uuid4())
            conn.execute(
                sa.insert(TT).values(
                    id=template_id,
                    slug=slug,
                    agent_type=role,
                    owner_tenant_id=author,
                    name=fields.name,
                    description=fields.description,
                    created_at=now,
                )
            )
            conn.execute(
                sa.insert(L).values(
                    id=listing_id,
                    slug=slug,
                    template_id=template_id,
                    author_tenant_id=author,
                    **self._columns(fields),
                    version=1,
                    install_count=0,
                    rating_sum=0,
                    rating_count=0,
                    rating_milli=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            self._add_version(conn, listing_id, template_id, 1, draft, settings, sealed, author, now)
            return listing_where(conn, L.c.id == listing_id), {"listing_id": listing_id}

        try:
            return requests.LOG.run(self.db, key, self.clock.now, work, _current)
        except IntegrityError:  # a template or listing of that slug made meanwhile
            raise AlreadyExists(f"a template with slug {slug!r} exists", slug=slug) from None

    def update(
        self,
        author: str,
        listing_id: str,
        fields: ListingFields,
        draft: Draft | None,
        key: RequestKey | None = None,
    ) -> Listing:
        """Replace the listing's fields (its author's alone) and publish `draft` as its next version."""
        settings = _check_draft(draft) if draft is not None else None
        if fields.pricing.is_paid:
            self.sealer.require()  # before anything is written
        sealed = self.sealer.seal(draft.prompt) if draft is not None and fields.pricing.is_paid else None

        def work(conn: Connection, now: datetime) -> tuple[Listing, Answer]:
            listing = listing_where(conn, L.c.id == listing_id, L.c.author_tenant_id == author, lock=True)
            values: dict[str, Any] = {**self._columns(fields), "updated_at": now}
            if fields.pricing.is_paid:
                self._seal_open_versions(conn, listing.id)
            if draft is not None and settings is not None:
                values["version"] = listing.version + 1
                self._add_version(
                    conn,
                    listing.id,
                    listing.template_id,
                    listing.version + 1,
                    draft,
                    settings,
                    sealed,
                    author,
                    now,
                )
            conn.execute(sa.update(L).where(L.c.id == listing.id).values(values))
            conn.execute(
                sa.update(TT)
                .where(TT.c.id == listing.template_id)
                .values(name=fields.name, description=fields.description)
            )
            updated = listing_where(conn, L.c.id == listing.id)
            return updated, {"listing_id": listing.id, "version": updated.version}

        return requests.LOG.run(self.db, key, self.clock.now, work, _current)

    def _columns(self, fields: ListingFields) -> dict[str, Any]:
        return {
            "name": fields.name,
            "description": fields.description,
            "category": fields.category.value,
            "tags": json.dumps(list(fields.tags), separators=(",", ":")),
            "visibility": fields.visibility.value,
            "pricing_model": fields.pricing.value,
            "price_usd_micros": fields.price_usd_micros,
            "config_schema": json.dumps(fields.config_schema, separators=(",", ":"), sort_keys=True),
        }

    def _add_version(
        self,
        conn: Connection,
        listing_id: str,
        template_id: str,
        number: int,
        draft: Draft,
        settings: tuple[str, str],
        sealed: str | None,
        author: str,
        now: datetime,
    ) -> None:
        version_id = str(uuid.uuid4())
        conn.execute(
            sa.insert(TV).values(
                id=version_id,
                template_id=template_id,
                version=number,
                prompt=SEALED_PLACEHOLDER if sealed is not None else draft.prompt,
                model=draft.model,
                parameters=settings[0],
                tools=settings[1],
                author=author,
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(MV).values(
                version_id=version_id, listing_id=listing_id, sealed_prompt=sealed, created_at=now
            )
        )

    def _seal_open_versions(self, conn: Connection, listing_id: str) -> None:
        """A listing turning paid: seal the prompts its free versions stored in the clear."""
        rows = conn.execute(
            sa.select(TV.c.id, TV.c.prompt)
            .join(MV, MV.c.version_id == TV.c.id)
            .where(MV.c.listing_id == listing_id, MV.c.sealed_prompt.is_(None))
        ).all()
        for row in rows:
            conn.execute(
                sa.update(MV)
                .where(MV.c.version_id == row.id)
                .values(sealed_prompt=self.sealer.seal(row.prompt))
            )
            conn.execute(sa.update(TV).where(TV.c.id == row.id).values(prompt=SEALED_PLACEHOLDER))
