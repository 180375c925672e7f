"""The template marketplace as tenants use it: search, details, installs,
uninstalls and reviews (rules in `swarm_ticketing.marketplace`; publishing
in `stores.listings`; the ledger, what installers may deploy and read, and
per-use charging in `stores.entitlements`).

Counters are exact under concurrency: installs, uninstalls and reviews move
them with one relative `UPDATE` in the transaction that writes the row they
count, and a second installation or review by a tenant trips a unique index
(ALREADY_EXISTS; the transaction, purchase included, rolls back).

Installs, uninstalls and reviews take a request id (`stores.requests`): a
retry answers as the first call did and writes nothing. Recorded: the
installation an install made or an uninstall removed (whole: it may be gone
by the retry) with the charge's ledger id, and the review's id (the review
and the listing are replayed as they are now).
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
    Category,
    Detail,
    Installation,
    LedgerEntry,
    LedgerKind,
    Listing,
    Pricing,
    Review,
    Sort,
    Visibility,
    may_read_prompt,
    validate_config,
)
from swarm_ticketing.marketplace_tables import (
    marketplace_installations,
    marketplace_ledger,
    marketplace_listings,
    marketplace_reviews,
    marketplace_versions,
)
from swarm_ticketing.stores import entitlements, requests
from swarm_ticketing.stores.listings import (
    LISTING,
    installation_of,
    listing_where,
    to_installation,
    to_listing,
    visible_listing,
)
from swarm_ticketing.stores.templates import Obj, latest_deployment
from swarm_ticketing.tables import (
    agent_template_versions,
    agent_templates,
)
from swarmcommon import keyset
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from swarmcommon.idempotency import Answer, RequestKey
from swarmcommon.pagination import Page

L, MV, MI, MR, LED = (
    marketplace_listings,
    marketplace_versions,
    marketplace_installations,
    marketplace_reviews,
    marketplace_ledger,
)
TT, TV = agent_templates, agent_template_versions
# An installation and the purchase it made, if it made one.
Installed = tuple[Installation, LedgerEntry | None]
_SORT = {Sort.RATING: L.c.rating_milli, Sort.INSTALLS: L.c.install_count, Sort.RECENT: L.c.created_at}


def _recorded(i: Installation) -> dict[str, Any]:
    """An installation as a request log answer (installations never change)."""
    return {**i.__dict__, "created_at": i.created_at.isoformat()}


def _replayed(outcome: dict[str, Any]) -> Installation:
    return Installation(**{**outcome, "created_at": datetime.fromisoformat(outcome["created_at"])})


class Marketplace:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # -- everyone -----------------------------------------------------------------------------

    def search(
        self,
        viewer: str,
        category: Category | None,
        tag: str,
        text: str,
        sort: Sort,
        page_size: int,
        page_token: str,
    ) -> Page[Listing]:
        """Public listings (never private or unlisted ones, not even the viewer's own)."""
        query = LISTING.where(L.c.visibility == Visibility.PUBLIC.value)
        if category is not None:
            query = query.where(L.c.category == category.value)
        if tag:
            query = query.where(L.c.tags.contains(f'"{tag}"', autoescape=True))
        if text:
            needle = text.lower()
            query = query.where(
                sa.or_(
                    sa.func.lower(L.c.name).contains(needle, autoescape=True),
                    sa.func.lower(L.c.description).contains(needle, autoescape=True),
                )
            )
        order = [_SORT[sort], L.c.id]
        filters = ["marketplace", category, tag, text, sort]
        return keyset.listing(
            self.db, query, order, filters, page_size, page_token, to_listing, descending=True
        )

    def detail(self, viewer: str, slug: str) -> Detail:
        def read(conn: Connection) -> Detail:
            listing = visible_listing(conn, viewer, L.c.slug == slug)
            installation = installation_of(conn, listing, viewer)
            readable = may_read_prompt(
                viewer,
                listing.author_tenant_id,
                listing.pricing,
                installation is not None,
                installation is not None and installation.purchase_id is not None,
            )
            version = conn.execute(
                sa.select(TV.c.prompt, TV.c.model, MV.c.sealed_prompt)
                .join(MV, MV.c.version_id == TV.c.id)
                .where(TV.c.template_id == listing.template_id, TV.c.version == listing.version)
            ).one()
            prompt = entitlements.unsealed(version.prompt, version.sealed_prompt) if readable else ""
            return Detail(listing, installation, prompt, readable, version.model)

        return self.db.transaction(read, write=False)

    # -- installers ---------------------------------------------------------------------------

    def install(self, tenant: str, slug: str, config_json: str, key: RequestKey | None = None) -> Installed:
        """Install (and, if it is sold, buy) a listing; one installation per tenant."""

        def work(conn: Connection, now: datetime) -> tuple[Installed, Answer]:
            listing = visible_listing(conn, tenant, L.c.slug == slug)
            if listing.author_tenant_id == tenant:
                raise FailedPrecondition(
                    f"{slug!r} is your own template: deploy it without installing it", slug=slug
                )
            config = validate_config(listing.config_schema, config_json)
            mine = installation_of(conn, listing, tenant)
            if mine is not None:
                raise AlreadyExists(
                    f"{slug!r} is already installed (installation {mine.id})", installation_id=mine.id
                )
            charge = self._purchase(conn, listing, tenant, now)
            row = {
                "id": str(uuid.uuid4()),
                "listing_id": listing.id,
                "tenant_id": tenant,
                "version": listing.version,
                "config": json.dumps(config, separators=(",", ":"), sort_keys=True),
                "purchase_id": self._purchase_id(conn, listing, tenant) if charge is None else charge.id,
                "created_at": now,
            }
            conn.execute(sa.insert(MI).values(row))
            conn.execute(sa.update(L).where(L.c.id == listing.id).values(install_count=L.c.install_count + 1))
            made = to_installation(Obj(row), listing.slug)
            return (made, charge), {
                "installation": _recorded(made),
                "charge_id": charge.id if charge else None,
            }

        def replay(conn: Connection, outcome: Answer) -> Installed:
            charge = outcome["charge_id"]
            return _replayed(outcome["installation"]), entitlements.entry(conn, charge) if charge else None

        try:
            return requests.LOG.run(self.db, key, self.clock.now, work, replay)
        except IntegrityError:  # the same tenant installing twice at once
            raise AlreadyExists(f"{slug!r} is already installed", slug=slug) from None

    def _purchase(self, conn: Connection, listing: Listing, tenant: str, now: datetime) -> LedgerEntry | None:
        """The charge an installation makes: a subscription's period, or a
        one-time purchase the tenant has not made before; else none."""
        model = listing.pricing
        if model not in (Pricing.ONE_TIME, Pricing.SUBSCRIPTION):
            return None
        if model is Pricing.ONE_TIME and self._purchase_id(conn, listing, tenant) is not None:
            return None  # bought once, installed again
        return entitlements.record(
            conn, listing.id, tenant, listing.author_tenant_id, model, listing.price_usd_micros, now
        )

    def _purchase_id(self, conn: Connection, listing: Listing, tenant: str) -> str | None:
        if listing.pricing is not Pricing.ONE_TIME:
            return None
        found: str | None = conn.execute(
            sa.select(LED.c.id)
            .where(
                LED.c.buyer_tenant_id == tenant,
                LED.c.listing_id == listing.id,
                LED.c.kind == LedgerKind.PURCHASE.value,
            )
            .limit(1)
        ).scalar()
        return found

    def uninstall(self, tenant: str, installation_id: str, key: RequestKey | None = None) -> Installation:
        """Remove the tenant's installation (purchases stay in the ledger)."""

        def work(conn: Connection, now: datetime) -> tuple[Installation, Answer]:
            row = conn.execute(
                sa.select(MI, L.c.slug, L.c.template_id, TT.c.agent_type)
                .join(L, L.c.id == MI.c.listing_id)
                .join(TT, TT.c.id == L.c.template_id)
                .where(MI.c.id == installation_id, MI.c.tenant_id == tenant)
            ).first()
            if row is None:
                raise NotFound(f"installation {installation_id!r} not found", installation_id=installation_id)
            current = latest_deployment(conn, tenant, row.agent_type)
            if current is not None and current.tenant_id == tenant:
                used = {current.version_id, current.stable_version_id} - {None}
                runs = conn.execute(
                    sa.select(TV.c.id).where(TV.c.template_id == row.template_id, TV.c.id.in_(used))
                ).first()
                if runs is not None:
                    raise FailedPrecondition(
                        f"deployment {current.id} runs {row.slug!r}: deploy another {row.agent_type} "
                        "template or pause the deployment first",
                        deployment_id=current.id,
                    )
            deleted = conn.execute(sa.delete(MI).where(MI.c.id == installation_id))
            if deleted.rowcount != 1:
                raise NotFound(f"installation {installation_id!r} not found", installation_id=installation_id)
            conn.execute(
                sa.update(L).where(L.c.id == row.listing_id).values(install_count=L.c.install_count - 1)
            )
            removed = to_installation(row, row.slug)
            return removed, _recorded(removed)

        return requests.LOG.run(self.db, key, self.clock.now, work, lambda conn, outcome: _replayed(outcome))

    def review(
        self,
        tenant: str,
        listing_id: str,
        rating: int,
        title: str,
        body: str,
        key: RequestKey | None = None,
    ) -> tuple[Review, Listing]:
        """One review per tenant that installed the listing; the average moves at once."""
        if not 1 <= rating <= 5:
            raise InvalidArgument("rating", f"must be 1 to 5 (got {rating})")

        def work(conn: Connection, now: datetime) -> tuple[tuple[Review, Listing], Answer]:
            listing = visible_listing(conn, tenant, L.c.id == listing_id)
            if listing.author_tenant_id == tenant:
                raise FailedPrecondition("authors cannot review their own template", listing_id=listing_id)
            if installation_of(conn, listing, tenant) is None:
                raise FailedPrecondition(
                    f"install {listing.slug!r} before reviewing it", listing_id=listing_id
                )
            if conn.execute(
                sa.select(MR.c.id).where(MR.c.listing_id == listing.id, MR.c.tenant_id == tenant)
            ).first():
                raise AlreadyExists(f"you already reviewed {listing.slug!r}", listing_id=listing_id)
            review = Review(str(uuid.uuid4()), listing.id, tenant, rating, title, body, now)
            conn.execute(sa.insert(MR).values(**review.__dict__))
            conn.execute(
                sa.update(L)
                .where(L.c.id == listing.id)
                .values(
                    rating_sum=L.c.rating_sum + rating,
                    rating_count=L.c.rating_count + 1,
                    # Both sides read the row before this update: the new average x 1000.
                    rating_milli=(L.c.rating_sum + rating) * 1000 / (L.c.rating_count + 1),
                )
            )
            return (review, listing_where(conn, L.c.id == listing.id)), {"review_id": review.id}

        def replay(conn: Connection, outcome: Answer) -> tuple[Review, Listing]:
            row = conn.execute(sa.select(MR).where(MR.c.id == outcome["review_id"])).one()
            review = Review(
                row.id, row.listing_id, row.tenant_id, row.rating, row.title, row.body, row.created_at
            )
            return review, listing_where(conn, L.c.id == review.listing_id)

        try:
            return requests.LOG.run(self.db, key, self.clock.now, work, replay)
        except IntegrityError:  # the same tenant reviewing twice at once
            raise AlreadyExists("you already reviewed this template", listing_id=listing_id) from None

    def ledger(self, tenant: str) -> list[LedgerEntry]:
        """Every charge `tenant` paid or earned, oldest first."""
        return self.db.transaction(lambda conn: entitlements.ledger(conn, tenant), write=False)
