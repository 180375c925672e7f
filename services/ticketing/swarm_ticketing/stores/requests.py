"""Request ids (AIP-155) of every mutating call but ClaimTicket, whose hot
path keeps its own per-agent record (`claim_requests`, see `claims.py`).

The request id is taken FIRST in the call's transaction, by inserting its row
before anything else is written. A concurrent duplicate then waits on the
primary key until the first commits and fails with IntegrityError
(PostgreSQL; SQLite has one writer, so the duplicate simply sees the row);
`once` then runs the transaction again, which finds the recorded outcome and
replays it. A call that fails rolls back its request id with everything else,
so a retry runs it again.

What is recorded is the outcome that cannot be read back later (the lease
expiry granted, the tickets a submit unblocked, whether a failure
quarantined); a replay answers with those and with the tickets as they are
now.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.domain import RequestKey
from swarm_ticketing.tables import claim_requests, request_log
from swarmcommon.db import Database
from swarmcommon.errors import InvalidArgument

R = TypeVar("R")
Outcome = dict[str, Any]
L = request_log


def reused(operation: str, request_id: str) -> InvalidArgument:
    return InvalidArgument(
        "request_id",
        f"{request_id!r} was already used for a different {operation} request; "
        "a new request needs a new request_id",
    )


def _where(key: RequestKey) -> Any:
    return sa.and_(
        L.c.tenant_id == key.tenant_id, L.c.operation == key.operation, L.c.request_id == key.request_id
    )


def lookup(conn: Connection, key: RequestKey | None) -> Outcome | None:
    """The outcome of an earlier call with `key`; INVALID_ARGUMENT if that call was another request."""
    if key is None:
        return None
    row = conn.execute(sa.select(L.c.fingerprint, L.c.outcome).where(_where(key))).first()
    if row is None:
        return None
    if row.fingerprint != key.fingerprint:
        raise reused(key.operation, key.request_id)
    return dict(json.loads(row.outcome))


def once(
    db: Database,
    key: RequestKey | None,
    now: Callable[[], datetime],
    work: Callable[[Connection, datetime], tuple[R, Outcome]],
    replay: Callable[[Connection, Outcome], R],
) -> R:
    """Run `work` in one transaction, recording its outcome under `key`; a
    call whose key was seen before gets `replay` of the recorded outcome."""

    def tx(conn: Connection) -> R:
        at = now()
        prior = lookup(conn, key)
        if prior is not None:
            return replay(conn, prior)
        if key is not None:
            conn.execute(
                sa.insert(L).values(
                    tenant_id=key.tenant_id,
                    operation=key.operation,
                    request_id=key.request_id,
                    fingerprint=key.fingerprint,
                    outcome="{}",
                    created_at=at,
                )
            )
        result, outcome = work(conn, at)
        if key is not None and outcome:
            conn.execute(sa.update(L).where(_where(key)).values(outcome=json.dumps(outcome)))
        return result

    try:
        return db.transaction(tx)
    except IntegrityError:
        if key is None:
            raise
        return db.transaction(tx)  # a concurrent duplicate committed first: replay it


def forget(db: Database, before: datetime) -> int:
    """Forget the request ids (of every call, claims included) recorded before `before`."""

    def tx(conn: Connection) -> int:
        return sum(
            conn.execute(sa.delete(table).where(table.c.created_at < before)).rowcount
            for table in (L, claim_requests)
        )

    return db.transaction(tx)
