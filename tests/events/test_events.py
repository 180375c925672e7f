"""The event log: idempotent intake, whole-batch validation, tenant-scoped reads;
and the ticketing outbox relay feeding it, including while it is down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import struct_pb2

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarm_events.tables import events as events_table
from swarm_ticketing.tables import outbox, outbox_dead_letters
from swarmcommon.errors import SwarmError
from swarmcommon.grpcclient import channel
from swarmcommon.outbox import OutboxRelay
from tests.support.harness import BACKENDS, TicketingHarness
from tests.support.migrations import assert_migrations_build_the_models
from tests.support.ticketing import claim, create_project, spec, submit, tenant
from tests.support.waiting import eventually

pytestmark = BACKENDS


@dataclass
class EventsHarness:
    app: events_server.Events
    stub: pb_grpc.EventsServiceStub
    target: str


@pytest.fixture
def events(db: str) -> Iterator[EventsHarness]:
    app = events_server.start(EventsSettings(database_url=db, listen_address="127.0.0.1:0"))
    ch = channel(f"127.0.0.1:{app.port}")
    try:
        yield EventsHarness(app, pb_grpc.EventsServiceStub(ch), f"127.0.0.1:{app.port}")
    finally:
        ch.close()
        app.stop(grace=1)


def event(tenant_id: str, type_: str = "ticket.created", **data: str) -> pb.Event:
    payload = struct_pb2.Struct()
    payload.update(data)
    return pb.Event(id=str(uuid.uuid4()), tenant_id=tenant_id, type=type_, source="test", data=payload)


def test_publish_is_idempotent_on_event_id(events: EventsHarness) -> None:
    first, second = event("acme", ticket_id="t1"), event("acme")
    out = events.stub.Publish(pb.PublishRequest(events=[first, second]))
    assert list(out.accepted_event_ids) == [first.id, second.id]
    again = events.stub.Publish(pb.PublishRequest(events=[first]))
    assert list(again.accepted_event_ids) == [] and list(again.duplicate_event_ids) == [first.id]
    listed = events.stub.ListEvents(pb.ListEventsRequest(tenant_id="acme")).events
    assert [e.id for e in listed] == [second.id, first.id]  # newest first, each once
    assert listed[1].data["ticket_id"] == "t1"


def test_a_bad_event_rejects_the_whole_batch(events: EventsHarness) -> None:
    good, bad = event("acme"), event("acme", type_="Not A Type")
    with pytest.raises(grpc.RpcError) as info:
        events.stub.Publish(pb.PublishRequest(events=[good, bad]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].type" in info.value.details()
    assert events.stub.ListEvents(pb.ListEventsRequest(tenant_id="acme")).events == []


def test_events_are_listed_per_tenant_with_filters_and_pages(events: EventsHarness) -> None:
    mine = [event("a", "ticket.created"), event("a", "ticket.completed"), event("a", "ticket.completed")]
    events.stub.Publish(pb.PublishRequest(events=[*mine, event("b", "ticket.completed")]))
    completed = events.stub.ListEvents(pb.ListEventsRequest(tenant_id="a", types=["ticket.completed"])).events
    assert [e.id for e in completed] == [mine[2].id, mine[1].id]
    seen, token = [], ""
    while True:
        page = events.stub.ListEvents(pb.ListEventsRequest(tenant_id="a", page_size=2, page_token=token))
        seen += [e.id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seen == [e.id for e in reversed(mine)]
    assert events.stub.ListEvents(pb.ListEventsRequest(tenant_id="c")).events == []


def test_relay_ships_ticketing_events_and_survives_the_events_service_being_down(
    ticketing: TicketingHarness, db: str, tmp_path: Path
) -> None:
    t = tenant()
    create_project(ticketing.stub, t, [spec("a"), spec("b")])
    submit(ticketing.stub, t, claim(ticketing.stub, t, "agent-1"))

    def pending() -> list[str]:
        with ticketing.app.db.engine.connect() as conn:
            return [r.event_id for r in conn.execute(sa.select(outbox.c.event_id).order_by(outbox.c.id))]

    produced = pending()
    assert len(produced) == 4  # created x2, assigned, completed

    # Events is down: nothing is lost, the rows wait.
    dead = OutboxRelay(ticketing.app.db, outbox, outbox_dead_letters, "127.0.0.1:1", timeout=1)
    with pytest.raises(SwarmError):
        dead.run_once()
    dead.stop()
    assert pending() == produced

    # Events comes up (its own database): everything arrives once, in order, then leaves the outbox.
    app = events_server.start(
        EventsSettings(database_url=f"sqlite:///{tmp_path / 'ev.db'}", listen_address="127.0.0.1:0")
    )
    try:
        relay = OutboxRelay(ticketing.app.db, outbox, outbox_dead_letters, f"127.0.0.1:{app.port}", batch=3)
        assert relay.drain() == 4
        assert relay.drain() == 0
        relay.stop()
        assert pending() == []
        with app.db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events_table.c.event_id, events_table.c.type).order_by(events_table.c.seq)
            ).all()
        assert [r.event_id for r in rows] == produced
        assert [r.type for r in rows] == [
            "ticket.created",
            "ticket.created",
            "ticket.assigned",
            "ticket.completed",
        ]
    finally:
        app.stop(grace=1)


def test_migrations_build_the_models(db: str) -> None:
    from swarm_events.server import migrate
    from swarm_events.tables import VERSION_TABLE, metadata

    assert_migrations_build_the_models(db, migrate, metadata, VERSION_TABLE)


def test_ticketing_ships_outbox_in_the_background_when_configured(
    events: EventsHarness, db: str, tmp_path: Path
) -> None:
    from swarm_ticketing import server as ticketing_server
    from swarm_ticketing.config import Settings

    app = ticketing_server.start(
        Settings(
            database_url=f"sqlite:///{tmp_path / 't.db'}",
            listen_address="127.0.0.1:0",
            reaper_interval_seconds=0,
            events_target=events.target,
        )
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            from swarm.ticketing.v1 import ticketing_pb2_grpc

            ticketing_pb2_grpc.TicketingServiceStub(ch).CreateProject(
                tpb.CreateProjectRequest(tenant_id="acme", name="p", tickets=[spec("x")])
            )
        got = eventually(
            lambda: events.stub.ListEvents(pb.ListEventsRequest(tenant_id="acme")).events,
            timeout=10,
            what="the relayed event",
        )
        assert [e.type for e in got] == ["ticket.created"]
    finally:
        app.stop(grace=1)
