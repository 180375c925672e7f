"""Request ids (AIP-155) of every mutating call, over the shared request log
(`swarmcommon.idempotency`: the id is claimed first in the call's
transaction; the same id for a different request is INVALID_ARGUMENT).

A request id is unique per tenant across calls (the table's key has no
operation), so reusing one for another call is refused too. What is
recorded is the whole first answer, as JSON of the domain value the call
returned, and a retry gets exactly that back: a redelivery replayed after
the delivery succeeded still says PENDING, a rotation replays its secret.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from sqlalchemy.engine import Connection

from swarm_events.tables import request_log
from swarmcommon.db import Database
from swarmcommon.idempotency import RequestKey, RequestLog

__all__ = ["LOG", "RequestKey", "find", "once"]

T = TypeVar("T")
LOG = RequestLog(request_log)


def find(db: Database, key: RequestKey | None, answer: type[T]) -> T | None:
    """The first answer to an earlier call with this request id, if any (a
    cheap look before work done outside the transaction, such as a send)."""
    if key is None:
        return None
    prior = db.transaction(lambda conn: LOG.lookup(conn, key), write=False)
    return None if prior is None else load(answer, prior["answer"])


def once(
    db: Database, key: RequestKey | None, answer: type[T] | None, now: datetime, fn: Callable[[Connection], T]
) -> T:
    """Run `fn` in one transaction, unless this request id already has an answer."""

    def work(conn: Connection, at: datetime) -> tuple[T, dict[str, Any]]:
        result = fn(conn)
        return result, {"answer": dump(result)}

    def replay(conn: Connection, prior: dict[str, Any]) -> T:
        return load(answer, prior["answer"]) if answer is not None else None  # type: ignore[return-value]

    return LOG.run(db, key, lambda: now, work, replay)


# -- answers as JSON ---------------------------------------------------------------------------


def dump(value: Any) -> Any:
    """Domain values (dataclasses, enums, datetimes, lists, dicts) as JSON-ready data."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    return value


def load(kind: Any, raw: Any) -> Any:
    """The inverse of `dump` for a value of type `kind`."""
    if raw is None:
        return None
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(kind) if a is not type(None)]
        return load(inner[0], raw)
    if origin is list:
        return [load(get_args(kind)[0], v) for v in raw]
    if kind is datetime:
        return datetime.fromisoformat(raw)
    if isinstance(kind, type) and is_dataclass(kind):
        hints = get_type_hints(kind)
        return kind(**{f.name: load(hints[f.name], raw[f.name]) for f in fields(kind)})
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(raw)
    return raw
