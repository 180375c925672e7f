"""Request ids (AIP-155) of mutating calls: the first answer, once.

Every service keeps a request log table (tenant, request id, the call, a
fingerprint of the request, the recorded answer as JSON). The request id is
claimed FIRST in the call's transaction, by inserting its row before
anything else is written. A concurrent duplicate then waits on the primary
key until the first commits and fails with IntegrityError (PostgreSQL;
SQLite has one writer, so the duplicate simply finds the row); `once` runs
the transaction again, which finds the recorded answer and replays it.
Claiming last instead would let a duplicate see the first call's effects
(a quota already used, a webhook already deleted) and answer an error
instead of the first answer. A call that fails rolls its claim back with
everything else, so a retry runs it afresh.

The same request id on a different request (another call, or other
arguments by fingerprint) is INVALID_ARGUMENT, never another call's answer.

    log = RequestLog(request_log_table)                 # one per service
    key = request_key(tenant_id, request)               # None without a request_id
    def tx(conn):
        if (prior := log.lookup(conn, key)) is not None:
            return replay(prior)
        log.claim(conn, key, now)
        result = do_the_work(conn)
        log.record(conn, key, {"id": result.id})
        return result
    log.once(db, key, tx)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarmcommon import validation as v
from swarmcommon.db import Database, UTCDateTime
from swarmcommon.errors import InvalidArgument

T = TypeVar("T")
Answer = dict[str, Any]


@dataclass(frozen=True)
class RequestKey:
    """A mutating call's request_id, scoped by tenant, with what identifies the request."""

    tenant_id: str
    operation: str
    request_id: str
    fingerprint: str


def fingerprint(request: Message, ignore: tuple[str, ...] = ()) -> str:
    """A digest of a proto request without its request_id (nor the fields in
    `ignore`: how to ask, not what is asked)."""
    rest = type(request)()
    rest.CopyFrom(request)
    for name in ("request_id", *ignore):
        rest.ClearField(name)  # type: ignore[arg-type]
    return hashlib.sha256(rest.SerializeToString(deterministic=True)).hexdigest()


def request_key(tenant_id: str, request: Message) -> RequestKey | None:
    """The key of a mutating proto request; None when the caller sent no request_id.

    The operation is the RPC's name (`RenewLeaseRequest` -> `RenewLease`)."""
    request_id = v.optional_request_id(request.request_id)  # type: ignore[attr-defined]
    if request_id is None:
        return None
    operation = request.DESCRIPTOR.name.removesuffix("Request")
    return RequestKey(tenant_id, operation, request_id, fingerprint(request))


def reused(operation: str, request_id: str) -> InvalidArgument:
    return InvalidArgument(
        "request_id",
        f"{request_id!r} was already used for a different {operation} request; "
        "a new request needs a new request_id",
    )


def request_log_table(metadata: sa.MetaData, name: str = "request_log") -> sa.Table:
    """The request log of a service that had none before: one row per request id."""
    return sa.Table(
        name,
        metadata,
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Index(f"ix_{name}_created", "created_at"),
    )


class RequestLog:
    """Lookup, claim, record and forget over one service's request log table.

    The table has `tenant_id`, `request_id`, `operation`, `fingerprint`,
    `created_at` and an answer column (named by `answer`). When `operation`
    is not part of its primary key a request id is unique per tenant across
    calls, and reusing it for another call is refused too. A NULL fingerprint
    (rows written before fingerprints existed) matches any request."""

    def __init__(self, table: sa.Table, *, answer: str = "answer") -> None:
        self.table = table
        self.answer = table.c[answer]
        self._per_operation = "operation" in {c.name for c in table.primary_key.columns}

    def _where(self, key: RequestKey) -> sa.ColumnElement[bool]:
        t = self.table
        where = sa.and_(t.c.tenant_id == key.tenant_id, t.c.request_id == key.request_id)
        return sa.and_(where, t.c.operation == key.operation) if self._per_operation else where

    def lookup(self, conn: Connection, key: RequestKey | None) -> Answer | None:
        """The answer recorded for `key`, if any; INVALID_ARGUMENT if it was another request."""
        if key is None:
            return None
        t = self.table
        row = conn.execute(
            sa.select(t.c.operation, t.c.fingerprint, self.answer).where(self._where(key))
        ).first()
        if row is None:
            return None
        if row.operation != key.operation or row.fingerprint not in (None, key.fingerprint):
            raise reused(key.operation, key.request_id)
        answer: Answer = json.loads(row[2])
        return answer

    def claim(self, conn: Connection, key: RequestKey | None, now: datetime) -> None:
        """Take the request id inside the call's transaction; `record` writes its answer."""
        if key is None:
            return
        conn.execute(
            sa.insert(self.table).values(
                {
                    "tenant_id": key.tenant_id,
                    "operation": key.operation,
                    "request_id": key.request_id,
                    "fingerprint": key.fingerprint,
                    self.answer.name: "{}",
                    "created_at": now,
                }
            )
        )

    def record(self, conn: Connection, key: RequestKey | None, answer: Answer) -> None:
        if key is not None:
            conn.execute(
                sa.update(self.table).where(self._where(key)).values({self.answer.name: json.dumps(answer)})
            )

    def once(self, db: Database, key: RequestKey | None, tx: Callable[[Connection], T]) -> T:
        """Run `tx` in a transaction; when a concurrent duplicate committed first, run it
        again so it finds that call's answer."""
        try:
            return db.transaction(tx)
        except IntegrityError:
            if key is None:
                raise
            return db.transaction(tx)

    def run(
        self,
        db: Database,
        key: RequestKey | None,
        now: Callable[[], datetime],
        work: Callable[[Connection, datetime], tuple[T, Answer]],
        replay: Callable[[Connection, Answer], T],
    ) -> T:
        """The whole pattern: replay a recorded answer, or claim, work and record."""

        def tx(conn: Connection) -> T:
            at = now()
            prior = self.lookup(conn, key)
            if prior is not None:
                return replay(conn, prior)
            self.claim(conn, key, at)
            result, answer = work(conn, at)
            if answer:
                self.record(conn, key, answer)
            return result

        return self.once(db, key, tx)

    def forget(self, conn: Connection, before: datetime) -> int:
        """Drop request ids recorded before `before` (their retries are long over)."""
        return int(conn.execute(sa.delete(self.table).where(self.table.c.created_at < before)).rowcount)
