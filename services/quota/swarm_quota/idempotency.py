"""Request ids for Consume and Reserve (AIP-155): the first answer, once.

The request id is claimed FIRST in the charging transaction, by inserting its
row before the counter is touched. A concurrent duplicate then blocks on the
primary key until the first commits and fails with IntegrityError (PostgreSQL;
SQLite has one writer, so the duplicate simply sees the row); the caller
re-runs the transaction, which finds the recorded answer. Claiming after the
charge would let the duplicate's charge be refused by the first one's usage
and answer RESOURCE_EXHAUSTED instead of replaying the success.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_quota.tables import quota_requests
from swarmcommon.db import Database

T = TypeVar("T")
Q = quota_requests


def _key(tenant_id: str, operation: str, request_id: str) -> Any:
    return sa.and_(Q.c.tenant_id == tenant_id, Q.c.operation == operation, Q.c.request_id == request_id)


def prior(conn: Connection, tenant_id: str, operation: str, request_id: str | None) -> dict[str, Any] | None:
    """The recorded answer to an earlier call with this request id, if any."""
    if not request_id:
        return None
    raw = conn.execute(sa.select(Q.c.response).where(_key(tenant_id, operation, request_id))).scalar()
    return None if raw is None else dict(json.loads(raw))


def claim(conn: Connection, tenant_id: str, operation: str, request_id: str | None, now: datetime) -> None:
    """Take the request id for this transaction; its answer is written by `record`."""
    if request_id:
        conn.execute(
            sa.insert(Q).values(
                tenant_id=tenant_id,
                operation=operation,
                request_id=request_id,
                response="{}",
                created_at=now,
            )
        )


def record(
    conn: Connection, tenant_id: str, operation: str, request_id: str | None, answer: dict[str, Any]
) -> None:
    if request_id:
        conn.execute(
            sa.update(Q).where(_key(tenant_id, operation, request_id)).values(response=json.dumps(answer))
        )


def once(db: Database, request_id: str | None, fn: Callable[[Connection], T]) -> T:
    """Run `fn` in a transaction; if a concurrent duplicate won, run it again to replay."""
    try:
        return db.transaction(fn)
    except IntegrityError:
        if not request_id:
            raise
        return db.transaction(fn)
