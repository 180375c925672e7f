"""Live streams (StreamEvents): the tenant's events of the asked types, live
or replayed from a time, across replicas; bounded per process and per tenant."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from swarm.events.v1 import events_pb2 as pb
from tests.events.helpers import Follower, open_stream, publish, start_live
from tests.support.harness import BACKENDS
from tests.support.status import error_info
from tests.support.waiting import eventually

pytestmark = BACKENDS


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def test_stream_delivers_the_tenants_live_events_of_the_asked_types(db: str) -> None:
    live = start_live(db)
    follower = Follower(live, pb.StreamEventsRequest(tenant_id="acme", types=["ticket.completed"]))
    try:
        wanted = [publish(live, "acme", "ticket.completed", n=str(i)) for i in range(3)]
        publish(live, "acme", "ticket.created")  # another type
        publish(live, "other", "ticket.completed")  # another tenant
        sentinel = publish(live, "acme", "ticket.completed", n="last")
        eventually(lambda: sentinel in follower.ids(), timeout=5, what="the sentinel")
        assert follower.ids() == [*wanted, sentinel]  # in arrival order, each once, nothing else
        assert all(e.tenant_id == "acme" for e in follower.events)
    finally:
        follower.close()
        live.stop()


def test_stream_replays_from_a_start_time_then_goes_live(db: str) -> None:
    live = start_live(db)
    old = [publish(live, "acme", "ticket.completed", n=str(i)) for i in range(2)]
    start = datetime.now(UTC) - timedelta(minutes=1)
    follower = Follower(live, pb.StreamEventsRequest(tenant_id="acme", start_time=_ts(start)))
    try:
        eventually(lambda: len(follower.events) >= 2, timeout=5)
        new = publish(live, "acme", "agent.failed")
        sentinel = publish(live, "acme", "ticket.completed", n="last")
        eventually(lambda: sentinel in follower.ids(), timeout=5, what="the sentinel")
        assert follower.ids() == [*old, new, sentinel]
    finally:
        follower.close()
        live.stop()


def test_stream_sees_events_published_through_another_replica(db: str) -> None:
    a, b = start_live(db), start_live(db)
    follower = Follower(a, pb.StreamEventsRequest(tenant_id="acme"))
    try:
        ids = [publish(b, "acme", "ticket.completed", n=str(i)) for i in range(5)]
        eventually(lambda: len(follower.events) >= 5, timeout=5)
        assert sorted(follower.ids()) == sorted(ids)
    finally:
        follower.close()
        a.stop()
        b.stop()


def test_stream_limits_and_bad_input(db: str) -> None:
    live = start_live(db, max_streams=1)
    first = Follower(live, pb.StreamEventsRequest(tenant_id="acme"))
    try:
        refused = Follower(live, pb.StreamEventsRequest(tenant_id="other")).refused()
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        bad = Follower(live, pb.StreamEventsRequest(tenant_id="acme", types=["NOPE"])).refused()
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "types[0]" in (bad.details() or "")
    finally:
        first.close()
    # Stopping the server ends open streams instead of waiting on them.
    third = open_stream(live, pb.StreamEventsRequest(tenant_id="acme"))
    started = time.monotonic()
    live.stop()
    third.thread.join(timeout=5)
    assert not third.thread.is_alive() and time.monotonic() - started < 4


def test_one_tenant_cannot_take_every_stream(db: str) -> None:
    live = start_live(db, max_streams=4, max_streams_per_tenant=2)
    followers: list[Follower] = []
    try:
        followers += [Follower(live, pb.StreamEventsRequest(tenant_id="greedy")) for _ in range(2)]
        refused = Follower(live, pb.StreamEventsRequest(tenant_id="greedy")).refused()
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.details() or ""
        assert "greedy" in details and "2 live event streams" in details, details
        assert error_info(refused).metadata["limit"] == "2"

        # Another tenant still gets a stream, and it works.
        modest = Follower(live, pb.StreamEventsRequest(tenant_id="modest"))
        followers.append(modest)
        assert not modest.call.done()
        sent = publish(live, "modest", "ticket.completed")
        eventually(lambda: modest.ids() == [sent], what="the other tenant's event on its stream")

        # A place given back can be taken again.
        followers.pop(0).close()
        followers.append(open_stream(live, pb.StreamEventsRequest(tenant_id="greedy")))
    finally:
        for follower in followers:
            follower.close()
        live.stop()
