"""What a tenant is entitled to of the marketplace, as the rest of ticketing
asks it: which listed templates it may deploy (those it installed), whose
prompts it may read, the sealed prompts themselves, and the ledger every
purchase and per-use charge is written to (rules: `swarm_ticketing.marketplace`).

Per-use charging runs on every claim (`StageTemplates.assign`, in the
claim's transaction): a version's listing never changes — a listing makes
its own template, and every version of it is the listing's — so which
listing a version belongs to (usually none) is read once per process.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.marketplace import (
    KEYRING,
    LEDGER_KIND,
    LedgerEntry,
    LedgerKind,
    Pricing,
    may_read_prompt,
    split,
)
from swarm_ticketing.marketplace_tables import (
    marketplace_installations,
    marketplace_ledger,
    marketplace_listings,
    marketplace_versions,
)
from swarm_ticketing.tables import (
    agent_template_versions,
)

L, MI, MV, LED = marketplace_listings, marketplace_installations, marketplace_versions, marketplace_ledger
TV = agent_template_versions


def installed_templates(viewer: str) -> sa.Select[Any]:
    """The ids of the templates `viewer` installed from the marketplace."""
    return sa.select(L.c.template_id).join(MI, MI.c.listing_id == L.c.id).where(MI.c.tenant_id == viewer)


def is_listed(conn: Connection, template_id: str) -> bool:
    return conn.execute(sa.select(L.c.id).where(L.c.template_id == template_id)).first() is not None


def may_read_prompts(conn: Connection, viewer: str, template_id: str) -> bool:
    """Whether `viewer` may read the prompts of a template it can see: any
    template that is not listed (its own or the platform's), and a listed
    one only as `marketplace.may_read_prompt` says."""
    row = conn.execute(
        sa.select(L.c.author_tenant_id, L.c.pricing_model, MI.c.id.label("installed"), MI.c.purchase_id)
        .select_from(L.outerjoin(MI, sa.and_(MI.c.listing_id == L.c.id, MI.c.tenant_id == viewer)))
        .where(L.c.template_id == template_id)
    ).first()
    if row is None:
        return True
    return may_read_prompt(
        viewer,
        row.author_tenant_id,
        Pricing(row.pricing_model),
        row.installed is not None,
        row.purchase_id is not None,
    )


def unsealed(prompt: str, sealed: str | None) -> str:
    """A version's prompt: the stored one, or the sealed one opened."""
    return prompt if sealed is None else KEYRING.open(sealed)


# -- the ledger -------------------------------------------------------------------------------


def to_entry(r: Any) -> LedgerEntry:
    return LedgerEntry(
        r.id,
        r.listing_id,
        r.buyer_tenant_id,
        r.author_tenant_id,
        LedgerKind(r.kind),
        r.price_usd_micros,
        r.platform_usd_micros,
        r.author_usd_micros,
        r.version_id,
        r.ticket_id,
        r.created_at,
    )


def record(
    conn: Connection,
    listing_id: str,
    buyer: str,
    author: str,
    model: Pricing,
    price: int,
    now: datetime,
    *,
    version_id: str | None = None,
    ticket_id: str | None = None,
    claim_token: str | None = None,
) -> LedgerEntry:
    """Charge `buyer` `price` for the listing, split between platform and author."""
    shares = split(model, price)
    row = {
        "id": str(uuid.uuid4()),
        "listing_id": listing_id,
        "buyer_tenant_id": buyer,
        "author_tenant_id": author,
        "kind": LEDGER_KIND[model].value,
        "price_usd_micros": shares.price,
        "platform_usd_micros": shares.platform,
        "author_usd_micros": shares.author,
        "version_id": version_id,
        "ticket_id": ticket_id,
        "claim_token": claim_token,
        "created_at": now,
    }
    conn.execute(sa.insert(LED).values(row))
    return to_entry(_Row(row))


def entry(conn: Connection, entry_id: str) -> LedgerEntry:
    """One ledger entry (entries are never changed nor removed)."""
    return to_entry(conn.execute(sa.select(LED).where(LED.c.id == entry_id)).one())


def ledger(conn: Connection, tenant: str) -> list[LedgerEntry]:
    """Every entry `tenant` paid or earned, oldest first."""
    rows = conn.execute(
        sa.select(LED)
        .where(sa.or_(LED.c.buyer_tenant_id == tenant, LED.c.author_tenant_id == tenant))
        .order_by(LED.c.seq)
    ).all()
    return [to_entry(r) for r in rows]


# version id -> its listing's id, or None (not a marketplace version); see the module's doc.
_LISTING_OF: dict[str, str | None] = {}
_KEPT = 4096


def _listing_of(conn: Connection, version_id: str) -> str | None:
    if version_id in _LISTING_OF:
        return _LISTING_OF[version_id]
    listing_id = conn.execute(
        sa.select(L.c.id).join(TV, TV.c.template_id == L.c.template_id).where(TV.c.id == version_id)
    ).scalar()
    if len(_LISTING_OF) >= _KEPT:
        _LISTING_OF.clear()
    _LISTING_OF[version_id] = listing_id
    return listing_id


def charge_use(
    conn: Connection, tenant: str, version_id: str, ticket_id: str, claim_token: str, now: datetime
) -> LedgerEntry | None:
    """Charge one run of `version_id` by `tenant` if its listing is per-use
    (at today's price; the author's own runs are free)."""
    listing_id = _listing_of(conn, version_id)
    if listing_id is None:
        return None
    listing = conn.execute(
        sa.select(L.c.author_tenant_id, L.c.pricing_model, L.c.price_usd_micros).where(L.c.id == listing_id)
    ).one()
    if listing.pricing_model != Pricing.PER_USE.value or listing.author_tenant_id == tenant:
        return None
    return record(
        conn,
        listing_id,
        tenant,
        listing.author_tenant_id,
        Pricing.PER_USE,
        listing.price_usd_micros,
        now,
        version_id=version_id,
        ticket_id=ticket_id,
        claim_token=claim_token,
    )


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
