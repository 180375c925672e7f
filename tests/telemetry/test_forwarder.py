"""OTLP out: a copy of every export goes to a downstream receiver, from a
bounded queue drained by a background loop, never slowing ingestion."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.trace.v1 import trace_pb2

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarm_telemetry.forwarder import OtlpForwarder
from swarmcommon.errors import SwarmError
from swarmcommon.localproc import free_port
from tests.support.harness import BACKENDS, TelemetryHarness, start_telemetry
from tests.support.waiting import eventually
from tests.telemetry.helpers import work_on_ticket

pytestmark = BACKENDS


@pytest.fixture
def downstream(tmp_path: Path) -> Iterator[TelemetryHarness]:
    """Another telemetry server as the downstream receiver (any OTLP receiver would do)."""
    harness = start_telemetry(f"sqlite:///{tmp_path / 'downstream.db'}")
    try:
        yield harness
    finally:
        harness.stop()


def _trace(h: TelemetryHarness, ticket: str) -> pb.GetTicketTraceResponse:
    reply: pb.GetTicketTraceResponse = h.stub.GetTicketTrace(
        pb.GetTicketTraceRequest(tenant_id="acme", ticket_id=ticket)
    )
    return reply


def _export(ticket: str, name: str = "step") -> otlp.ExportTraceServiceRequest:
    span = trace_pb2.Span(
        trace_id=uuid.uuid4().bytes,
        span_id=uuid.uuid4().bytes[:8],
        name=name,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_001_000_000,
    )
    span.attributes.add(key="swarm.tenant_id").value.string_value = "acme"
    span.attributes.add(key="swarm.ticket_id").value.string_value = ticket
    return otlp.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )


def _names(h: TelemetryHarness, ticket: str) -> list[str]:
    try:
        return sorted(s.name for s in _trace(h, ticket).spans)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return []


def test_forwarding_sends_the_same_spans_downstream(db: str, downstream: TelemetryHarness) -> None:
    upstream = start_telemetry(db, forward_otlp_target=downstream.target)
    try:
        ticket = str(uuid.uuid4())
        work_on_ticket(upstream, "acme", ticket)
        ours = _trace(upstream, ticket)
        eventually(lambda: len(_names(downstream, ticket)) == len(ours.spans), what="spans downstream")
        theirs = _trace(downstream, ticket)
        assert [(s.span_id, s.parent_span_id, s.name) for s in theirs.spans] == [
            (s.span_id, s.parent_span_id, s.name) for s in ours.spans
        ]
        forwarder = upstream.app.forwarder
        assert forwarder is not None and forwarder.dropped == 0 and forwarder.failed == 0
        assert forwarder.running and forwarder.stats.failures == 0
    finally:
        upstream.stop()
    assert not forwarder.running  # stopping the server stops its loop
    forwarder.start()  # and a stopped loop does not start again
    assert not forwarder.running


def test_the_queue_is_bounded_and_drops_the_oldest(db: str, downstream: TelemetryHarness) -> None:
    forwarder = OtlpForwarder(downstream.target, capacity=2)  # not started: passes run by hand
    ticket = str(uuid.uuid4())
    for name in ("first", "second", "third", "fourth"):
        forwarder.submit(_export(ticket, name))
    assert forwarder.queued == 2 and forwarder.dropped == 2
    assert forwarder.run_once() is True  # one forwarded, one waiting
    assert forwarder.run_once() is False
    assert forwarder.forwarded == 2 and forwarder.queued == 0
    assert _names(downstream, ticket) == ["fourth", "third"]
    forwarder.stop()


def test_stop_forwards_what_is_still_queued(db: str, downstream: TelemetryHarness) -> None:
    forwarder = OtlpForwarder(downstream.target)
    ticket = str(uuid.uuid4())
    for name in ("a", "b", "c"):
        forwarder.submit(_export(ticket, name))
    forwarder.stop()
    assert _names(downstream, ticket) == ["a", "b", "c"] and forwarder.forwarded == 3
    forwarder.stop()  # idempotent


def test_an_absent_downstream_never_slows_or_fails_ingestion(db: str) -> None:
    upstream = start_telemetry(db, forward_otlp_target=f"127.0.0.1:{free_port()}", forward_queue_size=2)
    forwarder = upstream.app.forwarder
    assert forwarder is not None
    try:
        ticket = str(uuid.uuid4())
        work_on_ticket(upstream, "acme", ticket)  # seven exports, one per span
        assert len(_trace(upstream, ticket).spans) == 7  # every span stored here
        # Each export is failed, dropped or still queued (none forwarded);
        # never more than the queue's capacity waits, and failures back the loop off.
        eventually(lambda: forwarder.failed + forwarder.dropped + forwarder.queued == 7, what="all accounted")
        assert forwarder.forwarded == 0 and forwarder.failed >= 1 and forwarder.queued <= 2
        assert forwarder.stats.consecutive_failures >= 1 and "SwarmError" in forwarder.stats.last_error
    finally:
        upstream.stop()  # does not wait on a failing downstream
    assert not forwarder.running


def test_a_failed_forward_is_counted_and_raised_for_backoff(db: str) -> None:
    forwarder = OtlpForwarder(f"127.0.0.1:{free_port()}", timeout=5)
    forwarder.submit(_export(str(uuid.uuid4())))
    with pytest.raises(SwarmError):
        forwarder.run_once()
    assert forwarder.failed == 1 and forwarder.queued == 0
    forwarder.stop()
