"""Keyset paging (AIP-158) for every listing: rows in a fixed, unique order,
each page resuming strictly after the last row of the page before, so rows
inserted meanwhile neither repeat nor vanish. The position travels in an
opaque PageToken bound to the listing's filters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarmcommon.db import Database, UTCDateTime
from swarmcommon.pagination import Page, PageToken

ItemT = TypeVar("ItemT")


def page(
    conn: Connection,
    query: sa.Select[Any],
    order: Sequence[sa.Column[Any]],
    filters: Sequence[Any],
    page_size: int,
    page_token: str,
) -> Page[Row[Any]]:
    """One page of `query` in `order` (whose last column must be unique).

    `filters` are everything else that shapes the listing (its name, tenant
    and filter values): a token is refused for any other listing."""
    token = PageToken(filters)
    after = token.decode(page_token, [_kind(c) for c in order])
    if after is not None:
        position = sa.tuple_(*(sa.literal(v, c.type) for v, c in zip(after, order, strict=True)))
        query = query.where(sa.tuple_(*order) > position)
    rows = conn.execute(query.order_by(*order).limit(page_size + 1)).all()
    if len(rows) <= page_size:
        return Page(list(rows), "")
    last = rows[page_size - 1]._mapping
    return Page(list(rows[:page_size]), token.encode([last[c] for c in order]))


def listing(
    db: Database,
    query: sa.Select[Any],
    order: Sequence[sa.Column[Any]],
    filters: Sequence[Any],
    page_size: int,
    page_token: str,
    convert: Callable[[Row[Any]], ItemT],
) -> Page[ItemT]:
    """`page` in a read transaction of its own, each row converted."""
    rows = db.transaction(lambda conn: page(conn, query, order, filters, page_size, page_token), write=False)
    return Page([convert(r) for r in rows.items], rows.next_page_token)


def _kind(column: sa.Column[Any]) -> type:
    # UTCDateTime is a TypeDecorator, whose python_type SQLAlchemy leaves as object.
    if isinstance(column.type, UTCDateTime):
        return datetime
    kind: type = column.type.python_type
    return kind
