"""The outbox relay: batches bounded by bytes, and an event that can never be
published is dead-lettered with an alert instead of blocking every later one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_events.tables import events as events_table
from swarm_ticketing.tables import outbox, outbox_dead_letters
from swarmcommon.limits import MAX_EVENT_DATA_BYTES
from swarmcommon.outbox import DEAD_LETTERED_EVENT, OutboxEvent, OutboxRelay, OutboxWriter
from tests.support.harness import BACKENDS, TicketingHarness

pytestmark = BACKENDS


@pytest.fixture
def events_app(tmp_path: Path) -> Iterator[events_server.Events]:
    app = events_server.start(
        EventsSettings(database_url=f"sqlite:///{tmp_path / 'events.db'}", listen_address="127.0.0.1:0")
    )
    yield app
    app.stop(grace=1)


def _stage(h: TicketingHarness, events: list[OutboxEvent]) -> None:
    writer = OutboxWriter(outbox, "ticketing")
    h.app.db.transaction(lambda conn: writer.add(conn, events, datetime.now(UTC)))


def _published(app: events_server.Events) -> list[tuple[str, str]]:
    with app.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events_table.c.event_id, events_table.c.type).order_by(events_table.c.seq)
        ).all()
    return [(r.event_id, r.type) for r in rows]


def _count(h: TicketingHarness, table: sa.Table) -> int:
    with h.app.db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_many_large_events_ship_in_batches_under_the_message_limit(
    ticketing: TicketingHarness, events_app: events_server.Events
) -> None:
    # 600 events of ~60 KB: 36 MB, more than any one gRPC request may carry.
    big = "x" * 60_000
    staged = [OutboxEvent("acme", "ticket.failed", {"details": big, "n": i}) for i in range(600)]
    _stage(ticketing, staged)
    relay = OutboxRelay(ticketing.app.db, outbox, outbox_dead_letters, f"127.0.0.1:{events_app.port}")
    try:
        assert relay.drain() == 600
    finally:
        relay.stop()
    assert [e for e, _ in _published(events_app)] == [e.event_id for e in staged]
    assert _count(ticketing, outbox) == 0
    assert _count(ticketing, outbox_dead_letters) == 0


def test_an_oversized_event_is_dead_lettered_with_an_alert_and_later_events_still_arrive(
    ticketing: TicketingHarness, events_app: events_server.Events
) -> None:
    before = OutboxEvent("acme", "ticket.created", {"ticket_id": "a"})
    huge = OutboxEvent("acme", "ticket.failed", {"details": "y" * (MAX_EVENT_DATA_BYTES + 1)})
    after = [OutboxEvent("acme", "ticket.completed", {"ticket_id": f"t{i}"}) for i in range(5)]
    _stage(ticketing, [before, huge, *after])
    relay = OutboxRelay(ticketing.app.db, outbox, outbox_dead_letters, f"127.0.0.1:{events_app.port}")
    try:
        relay.drain()
    finally:
        relay.stop()
    published = _published(events_app)
    ids = [e for e, _ in published]
    assert ids[0] == before.event_id
    assert [e.event_id for e in after] == [i for i in ids if i in {e.event_id for e in after}]
    assert huge.event_id not in ids
    # the alert: an event naming the lost one, for the same tenant
    alerts = [(e, t) for e, t in published if t == DEAD_LETTERED_EVENT]
    assert len(alerts) == 1
    with events_app.db.engine.connect() as conn:
        alert = conn.execute(sa.select(events_table).where(events_table.c.type == DEAD_LETTERED_EVENT)).one()
    data = json.loads(alert.data) if isinstance(alert.data, str) else alert.data
    assert data["event_id"] == huge.event_id and data["event_type"] == "ticket.failed"
    assert "over the limit" in data["reason"]
    assert alert.tenant_id == "acme"
    with ticketing.app.db.engine.connect() as conn:
        dead = conn.execute(sa.select(outbox_dead_letters)).one()
    assert dead.event_id == huge.event_id and "over the limit" in dead.reason
    assert _count(ticketing, outbox) == 0
    assert relay.relay_stats.dead_lettered == 1


def test_an_event_the_events_service_refuses_is_found_and_dead_lettered(
    ticketing: TicketingHarness, events_app: events_server.Events
) -> None:
    good = [OutboxEvent("acme", "ticket.created", {"ticket_id": f"t{i}"}) for i in range(4)]
    bad = OutboxEvent("acme", "Not A Type", {"ticket_id": "x"})  # events refuses the whole batch
    _stage(ticketing, [good[0], good[1], bad, good[2], good[3]])
    relay = OutboxRelay(ticketing.app.db, outbox, outbox_dead_letters, f"127.0.0.1:{events_app.port}")
    try:
        relay.drain()
    finally:
        relay.stop()
    ids = [e for e, _ in _published(events_app)]
    assert [g.event_id for g in good] == [i for i in ids if i in {g.event_id for g in good}]
    assert bad.event_id not in ids
    with ticketing.app.db.engine.connect() as conn:
        dead = conn.execute(sa.select(outbox_dead_letters)).one()
    assert dead.event_id == bad.event_id and "INVALID_ARGUMENT" in dead.reason
