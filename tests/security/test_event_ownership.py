"""A service may publish only its own events: with ticketing's identity one
cannot forge an agent's, a webhook's or vmhost's events (which go out signed
with the tenant's webhook secret)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from swarm.events.v1 import events_pb2 as pb
from swarm.events.v1 import events_pb2_grpc as pb_grpc
from tests.support.pki import MeshPki, own_channel
from tests.support.secure import SecureService


def _publish(servers: dict[str, SecureService], pki: MeshPki, identity: str, *types: str) -> list[str]:
    stub = pb_grpc.EventsServiceStub(own_channel(servers["events"].target, pki.identity(identity)))
    events = [pb.Event(id=str(uuid.uuid4()), tenant_id="acme", type=t, source=identity) for t in types]
    return list(stub.Publish(pb.PublishRequest(events=events)).accepted_event_ids)


def _listed(servers: dict[str, SecureService], pki: MeshPki) -> list[str]:
    stub = pb_grpc.EventsServiceStub(own_channel(servers["events"].target, pki.identity("operator-admin")))
    return [e.type for e in stub.ListEvents(pb.ListEventsRequest(tenant_id="acme")).events]


@pytest.mark.parametrize(
    ("identity", "types"),
    [
        ("ticketing", ("ticket.completed", "agent.started")),  # one foreign event spoils the batch
        ("ticketing", ("webhook.disabled",)),
        ("vmhost", ("ticket.completed",)),
        ("vmhost", ("pr.merged",)),
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
    mine = ("ticket.completed", "pr.opened", "outbox.dead_lettered")
    assert len(_publish(servers, pki, "ticketing", *mine)) == 3
    assert len(_publish(servers, pki, "vmhost", "agent.started", "outbox.dead_lettered")) == 2
