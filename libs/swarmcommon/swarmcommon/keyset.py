"""Keyset paging (AIP-158) for every listing of every service.

Rows come in a fixed, unique order (the last order column must be unique);
each page resumes strictly after the last row of the page before, so rows
inserted meanwhile neither repeat nor vanish. The position travels in an
opaque PageToken bound to the listing's filters; its parts are typed from
the order columns themselves, so a forged position is INVALID_ARGUMENT —
including a number too large for its column — never a database error.

    page = keyset.listing(db, sa.select(T).where(T.c.tenant_id == t), [T.c.created_at, T.c.id],
                          ["tickets", t, state], page_size, page_token, to_ticket)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from swarmcommon.db import Database, UTCDateTime
from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import Page, PageToken

ItemT = TypeVar("ItemT")

# The largest value an integer column of each kind holds on PostgreSQL.
_INT_BOUNDS: tuple[tuple[type[sa.types.TypeEngine[Any]], int], ...] = (
    (sa.BigInteger, 2**63 - 1),
    (sa.SmallInteger, 2**15 - 1),
    (sa.Integer, 2**31 - 1),
)


def page(
    conn: Connection,
    query: sa.Select[Any],
    order: Sequence[sa.Column[Any]],
    filters: Sequence[Any],
    page_size: int,
    page_token: str,
    *,
    descending: bool = False,
) -> Page[Row[Any]]:
    """One page of `query` in `order` (newest first when `descending`).

    `filters` are everything else that shapes the listing (its name, tenant
    and filter values): a token is refused for any other listing."""
    token = PageToken(filters)
    after = token.decode(page_token, [_kind(c) for c in order])
    if after is not None:
        _check_bounds(after, order)
        position = sa.tuple_(*(sa.literal(v, c.type) for v, c in zip(after, order, strict=True)))
        keys = sa.tuple_(*order)
        query = query.where(keys < position if descending else keys > position)
    ordering = [c.desc() for c in order] if descending else list(order)
    rows = conn.execute(query.order_by(*ordering).limit(page_size + 1)).all()
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
    *,
    descending: bool = False,
) -> Page[ItemT]:
    """`page` in a read transaction of its own, each row converted."""
    rows = db.transaction(
        lambda conn: page(conn, query, order, filters, page_size, page_token, descending=descending),
        write=False,
    )
    return Page([convert(r) for r in rows.items], rows.next_page_token)


def _kind(column: sa.Column[Any]) -> type:
    # UTCDateTime is a TypeDecorator, whose python_type SQLAlchemy leaves as object.
    if isinstance(column.type, UTCDateTime):
        return datetime
    kind: type = column.type.python_type
    return kind


def _check_bounds(position: Sequence[Any], order: Sequence[sa.Column[Any]]) -> None:
    for value, column in zip(position, order, strict=True):
        if not isinstance(value, int):
            continue
        for kind, bound in _INT_BOUNDS:
            if isinstance(column.type, kind):
                if not -bound - 1 <= value <= bound:
                    raise InvalidArgument("page_token", "is not a token this service issued")
                break
