"""Request ids (AIP-155) of every mutating call but ClaimTicket, whose hot
path keeps its own per-agent record (`claim_requests`, see `claims.py`),
over the shared request log (`swarmcommon.idempotency`).

What is recorded is the outcome that cannot be read back later (the lease
expiry granted, the tickets a submit unblocked, whether a failure
quarantined); a replay answers with those and with the tickets as they are
now.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from swarm_ticketing.tables import claim_requests, request_log
from swarmcommon.db import Database
from swarmcommon.idempotency import RequestLog, reused

__all__ = ["LOG", "forget", "reused"]

LOG = RequestLog(request_log, answer="outcome")


def forget(db: Database, before: datetime) -> int:
    """Forget the request ids (of every call, claims included) recorded before `before`."""

    def tx(conn: Connection) -> int:
        claims = conn.execute(sa.delete(claim_requests).where(claim_requests.c.created_at < before))
        return LOG.forget(conn, before) + int(claims.rowcount)

    return db.transaction(tx)
