"""Request ids (AIP-155) of every mutating call: the first answer, once.

The request id is claimed FIRST in the call's transaction, by inserting its
row before anything else is touched. A concurrent duplicate then blocks on
the primary key until the first commits and fails with IntegrityError
(PostgreSQL; SQLite has one writer, so the duplicate simply sees the row);
`once` re-runs the transaction, which finds the recorded answer. Claiming
after the charge would let the duplicate's charge be refused by the first
one's usage and answer RESOURCE_EXHAUSTED instead of replaying the success.

A request id seen before with a different request (by its fingerprint) is
INVALID_ARGUMENT rather than answered with the other request's outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_quota.domain import RequestKey
from swarm_quota.tables import quota_requests
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument

T = TypeVar("T")
Q = quota_requests


def _where(key: RequestKey) -> Any:
    return sa.and_(
        Q.c.tenant_id == key.tenant_id, Q.c.operation == key.operation, Q.c.request_id == key.request_id
    )


def prior(conn: Connection, key: RequestKey | None) -> dict[str, Any] | None:
    """The recorded answer to an earlier call with this key, if any."""
    if key is None:
        return None
    row = conn.execute(sa.select(Q.c.response, Q.c.fingerprint).where(_where(key))).first()
    if row is None:
        return None
    if row.fingerprint is not None and row.fingerprint != key.fingerprint:
        raise InvalidArgument(
            "request_id",
            f"{key.request_id!r} was already used for a different {key.operation} request; "
            "a new request needs a new request_id",
        )
    return dict(json.loads(row.response))


def claim(conn: Connection, key: RequestKey | None, now: datetime) -> None:
    """Take the request id for this transaction; its answer is written by `record`."""
    if key is not None:
        conn.execute(
            sa.insert(Q).values(
                tenant_id=key.tenant_id,
                operation=key.operation,
                request_id=key.request_id,
                fingerprint=key.fingerprint,
                response="{}",
                created_at=now,
            )
        )


def record(conn: Connection, key: RequestKey | None, answer: dict[str, Any]) -> None:
    if key is not None:
        conn.execute(sa.update(Q).where(_where(key)).values(response=json.dumps(answer)))


def once(db: Database, key: RequestKey | None, fn: Callable[[Connection], T]) -> T:
    """Run `fn` in a transaction; if a concurrent duplicate won, run it again to replay."""
    try:
        return db.transaction(fn)
    except IntegrityError:
        if key is None:
            raise
        return db.transaction(fn)
