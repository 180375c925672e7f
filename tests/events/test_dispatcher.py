"""The dispatcher against hostile endpoints: one that trickles its answer a
byte at a time must not slow anyone else's deliveries, and one that answers
with a huge body must not be read whole."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from swarm.events.v1 import events_pb2 as pb
from tests.events.endpoints import huge_body_endpoint, timed_receiver, trickling_endpoint
from tests.events.helpers import Live, attempts, hook, publish, start_live
from tests.support.harness import BACKENDS
from tests.support.status import raises_status
from tests.support.waiting import eventually

pytestmark = BACKENDS

LOG_CAP = 20 * 1024
HUGE = 64 * 1024 * 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(config: pytest.Config, line: str) -> None:
    """A line in the test run's output, even with output captured."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)


def _all_arrived(wanted: set[str], arrivals: dict[str, float], timeout: float) -> None:
    """Wait for every delivery, but only so long: a missing one counts as infinitely late."""
    try:
        eventually(lambda: wanted <= arrivals.keys(), timeout=timeout, what="every healthy delivery")
    except AssertionError:
        return


def test_a_trickling_endpoint_does_not_delay_a_healthy_one(db: str, pytestconfig: pytest.Config) -> None:
    # Each read of the trickle returns within the deadline (a byte every
    # 0.4 s), so only a deadline on the whole attempt ends it.
    live = start_live(db, delivery_timeout_seconds=1.0, dispatcher_workers=4)
    try:
        with trickling_endpoint(interval=0.4) as slow, timed_receiver() as healthy:
            hook(live, slow.url, ["*"], tenant_id="slowpoke")
            hook(live, healthy.url, ["*"], tenant_id="acme")
            for i in range(20):  # a backlog for the slow endpoint: more than every worker
                publish(live, "slowpoke", "ticket.completed", n=str(i))
            eventually(lambda: slow.connections >= 1, what="the trickling endpoint being called")

            published: dict[str, float] = {}
            rate, seconds = 20, 4.0
            start = time.monotonic()
            for i in range(int(rate * seconds)):
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                sent_at = time.monotonic()
                published[publish(live, "acme", "ticket.completed", n=str(i))] = sent_at
            _all_arrived(set(published), healthy.arrivals, timeout=10)

            latencies = [healthy.arrivals.get(i, math.inf) - t for i, t in published.items()]
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            missing = sum(1 for x in latencies if x == math.inf)
            report(
                pytestconfig,
                f"[trickle vs healthy, {db.split(':')[0]}] healthy event->delivery latency: "
                f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(latencies)} events "
                f"({missing} never arrived); trickling endpoint called {slow.connections} times",
            )
            # The trickle holds a worker for a whole attempt deadline (1 s) each
            # time; a healthy delivery waiting behind it would take that long.
            assert p99 < 0.8, f"healthy p99 {p99:.3f}s ({missing} of {len(latencies)} never arrived)"
            assert slow.connections >= 2  # the slow endpoint kept being served too
            assert slow.peak <= 2  # but never by more than its share (half of 4 workers)
    finally:
        live.stop()


@pytest.fixture
def live(db: str) -> Iterator[Live]:
    app = start_live(db)
    yield app
    app.stop()


def test_a_huge_response_body_is_not_read_whole(live: Live) -> None:
    with huge_body_endpoint(HUGE) as big:
        webhook_id, _ = hook(live, big.url, ["*"])

        # A test send and a delivery take the same bounded path.
        tried = live.stub.SendTestEvent(pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id))
        publish(live, "acme", "ticket.completed")
        eventually(lambda: len(attempts(live, webhook_id)) == 2, what="the delivery attempt")
        delivered = attempts(live, webhook_id)[0]

        for attempt in (tried.attempt, delivered):
            assert attempt.outcome == pb.ATTEMPT_OUTCOME_SUCCEEDED and attempt.response_status_code == 200
            assert attempt.response_body_truncated
            assert 0 < len(attempt.response_body.encode()) <= LOG_CAP
            assert set(attempt.response_body) == {"x"}
        eventually(lambda: len(big.responses) == 2 and all(r.done.is_set() for r in big.responses))
        for response in big.responses:
            # The reader hung up: what is left of the 64 MiB was never sent.
            assert not response.finished and response.sent < HUGE // 4, response.sent


def test_test_sends_to_a_slow_endpoint_are_bounded(db: str) -> None:
    live = start_live(db, delivery_timeout_seconds=1.0)
    try:
        with trickling_endpoint(interval=0.2) as slow:
            webhook_id, _ = hook(live, slow.url, ["*"])
            first: list[pb.SendTestEventResponse] = []
            request = pb.SendTestEventRequest(tenant_id="acme", webhook_id=webhook_id)
            # Deadlines on the calls: an unbounded test send would otherwise hang the test.
            thread = threading.Thread(
                target=lambda: first.append(live.stub.SendTestEvent(request, timeout=10))
            )
            thread.start()
            eventually(lambda: slow.active == 1, what="the first test send in flight")
            # One test send per webhook at a time: a second one is refused, not queued.
            with raises_status(grpc.StatusCode.RESOURCE_EXHAUSTED, webhook_id, "already being sent"):
                live.stub.SendTestEvent(request, timeout=10)
            thread.join(timeout=15)
            attempt = first[0].attempt
            # The trickle is cut at the attempt's deadline and logged as such.
            assert attempt.response_status_code == 200 and attempt.response_body_truncated
            assert "still arriving after 1s" in attempt.error
            assert [a.id for a in attempts(live, webhook_id)] == [attempt.id]
    finally:
        live.stop()
