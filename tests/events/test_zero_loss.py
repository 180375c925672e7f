"""Invariant 5: no event is lost. kill -9 the events service, or the producer
between commit and relay, while work goes on: after restarts, every event
reaches the subscribed receiver at least once, duplicates sharing webhook-id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from swarm.events.v1 import events_pb2 as epb
from swarm.events.v1 import events_pb2_grpc as epb_grpc
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm_ticketing.tables import audit_events
from swarmcommon.localproc import free_port, wait_until_serving
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

TENANT = "acme"
# Audit rows written in the same transaction as an outbox event.
EVENTFUL = ("created", "assigned", "completed")


class Proc:
    """A service as a real child process on a fixed port, restartable."""

    def __init__(self, module: str, prefix: str, settings: dict[str, str], log: Path) -> None:
        self.module, self.log = module, log
        self.port = free_port()
        self.env = {**os.environ, f"{prefix}LISTEN_ADDRESS": f"127.0.0.1:{self.port}"}
        self.env.update({f"{prefix}{k}": v for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], env=self.env, stdout=out, stderr=out
            )
        wait_until_serving(self.target, self.proc)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


@pytest.fixture
def mesh(tmp_path: Path, receiver: Receiver) -> Iterator[tuple[Proc, Proc, Receiver, Path]]:
    events = Proc(
        "swarm_events",
        "SWARM_EVENTS_",
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'events.db'}",
            "WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
            "RETRY_SCHEDULE_SECONDS": "0.05,0.1,0.2,0.2,0.2,0.2,0.2,0.2",
            "DISPATCHER_POLL_SECONDS": "0.02",
            # Deliveries cut off by the kill are reclaimed when their lease
            # (3 x this) lapses.
            "DELIVERY_TIMEOUT_SECONDS": "1",
        },
        tmp_path / "events.log",
    )
    ticketing_db = tmp_path / "ticketing.db"
    ticketing = Proc(
        "swarm_ticketing",
        "SWARM_TICKETING_",
        {
            "DATABASE_URL": f"sqlite:///{ticketing_db}",
            "EVENTS_TARGET": events.target,
            "REAPER_INTERVAL_SECONDS": "0",
        },
        tmp_path / "ticketing.log",
    )
    events.start()
    ticketing.start()
    with grpc.insecure_channel(events.target) as ch:
        epb_grpc.EventsServiceStub(ch).CreateWebhook(
            epb.CreateWebhookRequest(tenant_id=TENANT, url=receiver.url, event_types=["*"])
        )
    try:
        yield events, ticketing, receiver, ticketing_db
    finally:
        ticketing.stop()
        events.stop()


def _produce(target: str, stop: threading.Event) -> None:
    """Create tickets and work them, riding out the outages the test causes."""
    while not stop.is_set():
        try:
            with grpc.insecure_channel(target) as ch:
                stub = tpb_grpc.TicketingServiceStub(ch)
                stub.CreateProject(
                    tpb.CreateProjectRequest(
                        tenant_id=TENANT, name="p", tickets=[tpb.TicketSpec(key="a", name="A")]
                    ),
                    timeout=5,
                )
                c = stub.ClaimTicket(tpb.ClaimTicketRequest(tenant_id=TENANT, agent_id="agent"), timeout=5)
                if c.HasField("ticket"):
                    stub.SubmitWork(
                        tpb.SubmitWorkRequest(
                            tenant_id=TENANT, ticket_id=c.ticket.id, claim_token=c.lease.claim_token
                        ),
                        timeout=5,
                    )
        except grpc.RpcError:
            time.sleep(0.1)  # the service is being killed and restarted


def _expected_count(ticketing_db: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{ticketing_db}")
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(audit_events)
            .where(audit_events.c.event_type.in_(EVENTFUL))
        ).scalar_one()
    engine.dispose()
    return int(count)


def _all_delivered(receiver: Receiver, expected: int, timeout: float = 60) -> set[str]:
    def delivered() -> set[str]:
        return {h["webhook-id"] for h, _ in list(receiver.received)}

    try:
        return eventually(lambda: len(delivered()) >= expected and delivered(), timeout=timeout)
    except AssertionError:
        return delivered()  # the caller's assertion says how many never arrived


@pytest.mark.slow
def test_events_service_killed_and_restarted_loses_nothing(mesh: tuple[Proc, Proc, Receiver, Path]) -> None:
    events, ticketing, receiver, ticketing_db = mesh
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(ticketing.target, stop))
    producer.start()
    time.sleep(1.0)
    events.kill9()  # mid-stream: the relay and deliveries in flight die with it
    time.sleep(1.0)  # producers keep committing; their events wait in the outbox
    events.start()
    time.sleep(1.0)
    stop.set()
    producer.join()
    expected = _expected_count(ticketing_db)
    assert expected > 10
    delivered = _all_delivered(receiver, expected)
    assert len(delivered) == expected, f"{expected - len(delivered)} events never arrived"


@pytest.mark.slow
def test_producer_killed_between_commit_and_relay_loses_nothing(
    mesh: tuple[Proc, Proc, Receiver, Path],
) -> None:
    events, ticketing, receiver, ticketing_db = mesh
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(ticketing.target, stop))
    producer.start()
    time.sleep(1.0)
    # Stop the relay from shipping for a moment so committed rows are surely
    # waiting, then kill the producer: those rows exist only in its outbox.
    events.kill9()
    time.sleep(0.5)
    ticketing.kill9()
    stop.set()
    producer.join()
    events.start()
    ticketing.start()  # its relay resumes from the outbox on the database
    expected = _expected_count(ticketing_db)
    assert expected > 5
    delivered = _all_delivered(receiver, expected)
    assert len(delivered) == expected, f"{expected - len(delivered)} events never arrived"
