"""Span retention: old spans are deleted in bounded batches, by a background
loop with the shared start/stop discipline; the cost ledger is kept."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarm.telemetry.v1.telemetry_pb2_grpc import TelemetryServiceStub
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings
from swarm_telemetry.retention import SpanRetention
from swarmcommon.grpcclient import channel
from tests.support.harness import BACKENDS, TelemetryHarness
from tests.support.status import raises_status
from tests.support.waiting import eventually
from tests.telemetry.helpers import span_rows, usage_rows, work_on_ticket

pytestmark = BACKENDS


def _telemetry_with_retention(db: str, interval: float, hours: float) -> TelemetryHarness:
    """A telemetry server whose retention loop runs by itself (the shared
    harness turns it off so that other tests purge by hand)."""
    app = telemetry_server.start(
        Settings(
            database_url=db,
            listen_address="127.0.0.1:0",
            retention_interval_seconds=interval,
            span_retention_hours=hours,
        )
    )
    ch = channel(f"127.0.0.1:{app.port}")
    return TelemetryHarness(app, ch, TelemetryServiceStub(ch))


def test_retention_purges_old_spans(telemetry: TelemetryHarness) -> None:
    ticket = str(uuid.uuid4())
    work_on_ticket(telemetry, "acme", ticket)
    assert telemetry.app.spans.purge(timedelta(hours=1)) == 0
    assert telemetry.app.spans.purge(timedelta(seconds=-1)) == 7
    with raises_status(grpc.StatusCode.NOT_FOUND):
        telemetry.stub.GetTicketTrace(pb.GetTicketTraceRequest(tenant_id="acme", ticket_id=ticket))


def test_a_pass_deletes_one_batch_and_asks_for_another_while_more_wait(telemetry: TelemetryHarness) -> None:
    work_on_ticket(telemetry, "acme", str(uuid.uuid4()))
    retention = SpanRetention(telemetry.app.spans, timedelta(seconds=-1), interval=0, batch=3)
    assert [retention.run_once() for _ in range(3)] == [True, True, False]  # 3 + 3 + 1
    assert span_rows(telemetry) == []


def test_the_retention_loop_runs_on_its_own_and_keeps_the_ledger(db: str) -> None:
    h = _telemetry_with_retention(db, interval=0.05, hours=1e-9)
    retention = h.app.retention
    try:
        h.stub.RecordUsage(
            pb.RecordUsageRequest(
                request_id="r1", tenant_id="acme", model="claude-sonnet-4-5", input_tokens=1
            )
        )
        work_on_ticket(h, "acme", str(uuid.uuid4()))
        eventually(lambda: retention.purged == 7, what="the loop purged the seven spans")
        assert span_rows(h) == []
        assert retention.running and retention.stats.failures == 0
        assert len(usage_rows(h)) == 1  # billing is never purged
    finally:
        h.stop()
    assert not retention.running
    retention.stop()  # idempotent
