"""A service may publish only its own events: with ticketing's identity one
cannot forge an agent's, a webhook's or vmhost's events (which go out signed
with the tenant's webhook secret)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_ticketing.server import migrate
from swarm_ticketing.tables import outbox, outbox_dead_letters
from swarmcommon.db import Database
from swarmcommon.outbox import OutboxEvent, OutboxRelay, OutboxWriter
from swarmcommon.tls import ClientTls
from tests.support.pki import MeshPki, own_channel
from tests.support.secure import SecureService


def _publish(servers: dict[str, SecureService], pki: MeshPki, identity: str, *types: str) -> list[str]:
    stub = pb_grpc.EventsServiceStub(own_channel(servers["events"].target, pki.identity(identity)))
    events = [pb.Event(id=str(uuid.uuid4()), tenant_id="acme", type=t, source=identity) for t in types]
    return list(stub.Publish(pb.PublishRequest(events=events)).accepted_event_ids)


def _listed(servers: dict[str, SecureService], pki: MeshPki, tenant: str = "acme") -> list[str]:
    stub = pb_grpc.EventsServiceStub(own_channel(servers["events"].target, pki.identity("operator-admin")))
    return [e.type for e in stub.ListEvents(pb.ListEventsRequest(tenant_id=tenant)).events]


@pytest.mark.parametrize(
    ("identity", "types"),
    [
        ("ticketing", ("ticket.completed", "agent.started")),  # one foreign event spoils the batch
        ("ticketing", ("webhook.disabled",)),
        ("vmhost", ("ticket.completed",)),
        ("vmhost", ("pr.merged",)),
        ("vmhost", ("template.rolled_back",)),
    ],
)
def test_a_service_cannot_publish_another_ones_events(
    servers: dict[str, SecureService], pki: MeshPki, identity: str, types: tuple[str, ...]
) -> None:
    before = _listed(servers, pki)
    with pytest.raises(grpc.RpcError) as refused:
        _publish(servers, pki, identity, *types)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not its own" in (refused.value.details() or "")
    assert _listed(servers, pki) == before  # nothing stored


def test_each_service_publishes_its_own_events(servers: dict[str, SecureService], pki: MeshPki) -> None:
    # template.* included: ticketing owns agent templates (a refused one once
    # held every later event of ticketing's outbox behind it).
    mine = (
        "ticket.completed",
        "pr.opened",
        "template.rolled_back",
        "template.promoted",
        "outbox.dead_lettered",
    )
    assert len(_publish(servers, pki, "ticketing", *mine)) == 5
    assert len(_publish(servers, pki, "vmhost", "agent.started", "outbox.dead_lettered")) == 2


def test_an_event_not_its_own_is_dead_lettered_and_does_not_hold_the_outbox(
    servers: dict[str, SecureService], pki: MeshPki, tmp_path: Path
) -> None:
    """Ticketing's relay, with ticketing's certificate, ships an outbox whose
    second row is an event type ticketing does not own (a type added to a
    producer before events knew of it). Events refuses the batch; the relay
    must find that row, dead-letter it with the reason and ship the rest —
    it used to take the refusal for an outage and retry the same batch for
    ever, holding every later event of the outbox behind it."""
    url = f"sqlite:///{tmp_path / 'ticketing.db'}"
    migrate(url)
    db = Database.from_url(url)
    tenant = f"relay-{uuid.uuid4().hex[:8]}"
    good = [OutboxEvent(tenant, "ticket.created", {"ticket_id": f"t{i}"}) for i in range(3)]
    foreign = OutboxEvent(tenant, "agent.started", {"agent_id": "forged"})
    writer = OutboxWriter(outbox, "ticketing")
    db.transaction(lambda conn: writer.add(conn, [good[0], foreign, good[1], good[2]], datetime.now(UTC)))
    relay = OutboxRelay(
        db,
        outbox,
        outbox_dead_letters,
        servers["events"].target,
        tls=ClientTls.in_dir(pki.identity("ticketing")),
    )
    try:
        relay.drain()
    finally:
        relay.stop()
        with db.engine.connect() as conn:
            dead = conn.execute(sa.select(outbox_dead_letters)).all()
            left = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
        db.dispose()
    listed = _listed(servers, pki, tenant)
    # The three good events, and the alert naming the refused one (never the forged event).
    assert sorted(listed) == ["outbox.dead_lettered", "ticket.created", "ticket.created", "ticket.created"]
    assert [d.event_id for d in dead] == [foreign.event_id]
    assert "PERMISSION_DENIED" in dead[0].reason and "not its own" in dead[0].reason
    assert left == 0
