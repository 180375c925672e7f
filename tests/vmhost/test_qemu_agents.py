"""A qemu guest works a ticket end to end: restored from the image's snapshot
onto a real bridge, it runs the agent runtime from the read-only root
filesystem, heartbeats vmhost across the bridge, claims the ticket from
ticketing, submits what it found inside the VM, and its spans (a `vm.restore`
first) reach telemetry in the ticket's trace. With agent credentials, the
guest holds its token and the CA (written inside the VM) and does all of it
over TLS to the services' agent ports.

TCG on shared cores is slow: the first run on a host (or after the image
changed) boots the image into its snapshot (kept next to the image, so later
runs restore at once). Skips, with the driver's reason, only where qemu or
the guest image is missing (`make test` builds it first)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pyroute2 import IPRoute

from swarm.telemetry.v1 import telemetry_pb2 as telpb
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2_grpc as tpb_grpc
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm.vmhost.v1 import vmhost_pb2_grpc as pb_grpc
from swarm_ticketing import server as ticketing_server
from swarm_vmhost.domain import DriverName
from swarm_vmhost.drivers.qemu import tap_name
from tests.support.harness import TelemetryHarness, start_telemetry
from tests.support.pki import make_mesh_pki, own_channel, tls_channel
from tests.support.secure import start_secure
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness

IMAGE = REPO / "build" / "guest"
# Generous for TCG on two shared cores; the timings are printed (pytest -s).
TICKET_TIMEOUT = 300.0


@pytest.fixture
def telemetry(tmp_path: Path) -> Iterator[TelemetryHarness]:
    sink = start_telemetry(f"sqlite:///{tmp_path / 'telemetry.db'}", listen_address="0.0.0.0:0")
    yield sink
    sink.channel.close()
    sink.app.stop(grace=1)


def _ticket_trace(sink: TelemetryHarness, ticket_id: str) -> telpb.GetTicketTraceResponse | None:
    """The ticket's trace once the guest's spans (restore and work) are in."""
    try:
        trace = sink.stub.GetTicketTrace(telpb.GetTicketTraceRequest(tenant_id="acme", ticket_id=ticket_id))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return None
    return trace if {"vm.restore", "agent.work"} <= {s.name for s in trace.spans} else None


def test_a_qemu_guest_claims_and_completes_a_ticket(
    make_vmhost: Callable[..., VmHostHarness],
    ticketing: tuple[ticketing_server.Ticketing, tpb_grpc.TicketingServiceStub],
    telemetry: TelemetryHarness,
    spans: InMemorySpanExporter,  # a real tracer here: the ticket is created in a trace
    tmp_path: Path,
) -> None:
    app, tickets = ticketing
    host = make_vmhost(
        database_url=f"sqlite:///{tmp_path / 'vmhost.db'}",
        guest_image_dir=str(IMAGE),
        default_driver="qemu",
        ticketing_target=f"0.0.0.0:{app.port}",
        telemetry_target=f"0.0.0.0:{telemetry.app.port}",
        guest_work="swarmagent.vm:report",
        guest_env="OTEL_BSP_SCHEDULE_DELAY=200",
        heartbeat_interval_seconds=2,
    )
    qemu = host.app.host.drivers[DriverName.QEMU]
    if (why := qemu.probe()) is not None:
        pytest.skip(why)
    t0 = time.monotonic()
    template = qemu.ensure_template()  # once per image: restores below are fast
    template_s = time.monotonic() - t0

    project = tickets.CreateProject(
        tpb.CreateProjectRequest(tenant_id="acme", name="p", tickets=[tpb.TicketSpec(key="a", name="A")])
    )
    ticket_id = project.tickets[0].id
    t1 = time.monotonic()
    agent = host.stub.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", role=pb.AGENT_ROLE_CODER)).agent
    spawn_s = time.monotonic() - t1
    assert agent.driver == pb.DRIVER_QEMU
    handle = host.app.host.agents.get_any(agent.id).handle
    assert handle is not None and handle.data["template"] == template.name
    assert 0 < float(handle.data["restore_ms"]) <= float(handle.data["up_ms"])

    def heartbeating() -> bool:
        got = host.stub.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
        return got.state in (pb.AGENT_STATE_READY, pb.AGENT_STATE_BUSY)

    eventually(heartbeating, timeout=TICKET_TIMEOUT, interval=0.2, what="the guest's first heartbeat")
    ready_s = time.monotonic() - t1

    def done() -> tpb.Ticket | None:
        t = tickets.GetTicket(tpb.GetTicketRequest(tenant_id="acme", ticket_id=ticket_id)).ticket
        return t if t.state == tpb.TICKET_STATE_DONE else None

    final = eventually(done, timeout=TICKET_TIMEOUT, interval=0.2, what="the guest completing the ticket")
    ticket_s = time.monotonic() - t1

    # Done by this guest, from inside the VM: another kernel, a read-only root, its own address.
    result = json.loads(final.result_json)
    assert result["kernel"] != os.uname().release and result["kernel"].endswith("-cloud-amd64")
    assert result["root_read_only"] is True
    assert result["address"] == agent.address and result["ticket"] == ticket_id
    history = tickets.ListTicketEvents(
        tpb.ListTicketEventsRequest(tenant_id="acme", ticket_id=ticket_id)
    ).events
    assert [e.actor_id for e in history if e.event_type == "completed"] == [agent.id]

    # The ticket's trace starts with the restore, as vmhost measured it, then the guest's work.
    trace = eventually(
        lambda: _ticket_trace(telemetry, ticket_id), timeout=30, interval=0.2, what="the guest's spans"
    )
    created_in = final.traceparent.split("-")[1]  # the trace the ticket was created in
    assert list(trace.trace_ids) == [created_in]
    restore = next(s for s in trace.spans if s.name == "vm.restore")
    claim = next(s for s in trace.spans if s.name == "agent.claim")
    assert restore.service_name == "swarm-agent" and restore.agent_id == agent.id
    assert restore.trace_id == claim.trace_id == created_in
    assert restore.parent_span_id == claim.parent_span_id  # siblings under the ticket's creation
    restore_ms = restore.duration.ToNanoseconds() / 1e6
    assert abs(restore_ms - float(handle.data["restore_ms"])) < 50
    assert restore.start_time.ToNanoseconds() < claim.start_time.ToNanoseconds()

    gone = host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
    assert gone.state == pb.AGENT_STATE_TERMINATED
    assert handle.pid is not None and not qemu.alive(handle)
    with IPRoute() as ip:
        assert ip.link_lookup(ifname=tap_name(agent.id)) == []
    print(  # noqa: T201 - the timings this test exists to report
        f"\nqemu ({handle.data['accel']}): template {template_s:.1f}s, spawn {spawn_s:.1f}s "
        f"(restore {handle.data['restore_ms']} ms, up {handle.data['up_ms']} ms), "
        f"first heartbeat {ready_s:.1f}s, ticket done {ticket_s:.1f}s after spawn"
    )


def test_a_qemu_guest_with_its_token_works_a_ticket_over_tls(tmp_path: Path) -> None:
    pki = make_mesh_pki(tmp_path / "pki")
    # Agent ports on every address: guests reach them through the bridge.
    ticketing = start_secure("ticketing", pki, tmp_path / "ticketing", agent_listen_address="0.0.0.0:0")
    stops = [ticketing.stop]
    try:
        vmhost = start_secure(
            "vmhost",
            pki,
            tmp_path / "vmhost",
            agent_listen_address="0.0.0.0:0",
            guest_image_dir=str(IMAGE),
            default_driver="qemu",
            guest_command="python -m swarmagent.guest",
            guest_work="swarmagent.vm:report",
            ticketing_agent_target=f"0.0.0.0:{ticketing.agent_port}",
            heartbeat_interval_seconds=2,
        )
        stops.append(vmhost.stop)
        ops_vmhost = pb_grpc.VmHostServiceStub(own_channel(vmhost.target, pki.identity("operator-admin")))
        drivers = {d.driver: d for d in ops_vmhost.ListDrivers(pb.ListDriversRequest()).drivers}
        if not drivers[pb.DRIVER_QEMU].available:
            pytest.skip(drivers[pb.DRIVER_QEMU].reason)
        ch = tls_channel(ticketing.target, pki.ca_pem, pki.identity("operator-admin"))
        stops.append(ch.close)
        tickets = tpb_grpc.TicketingServiceStub(ch)
        project = tickets.CreateProject(
            tpb.CreateProjectRequest(tenant_id="acme", name="p", tickets=[tpb.TicketSpec(key="a", name="A")])
        )
        ticket_id = project.tickets[0].id
        agent = ops_vmhost.SpawnAgent(pb.SpawnAgentRequest(tenant_id="acme", role=pb.AGENT_ROLE_CODER)).agent

        def done() -> tpb.Ticket | None:
            t = tickets.GetTicket(tpb.GetTicketRequest(tenant_id="acme", ticket_id=ticket_id)).ticket
            return t if t.state == tpb.TICKET_STATE_DONE else None

        final = eventually(done, timeout=TICKET_TIMEOUT, interval=0.2, what="the guest completing the ticket")
        result = json.loads(final.result_json)
        # Its token, and the CA where the VM's init wrote it (not the host's path).
        assert result["with_token"] is True and result["ca_file"] == "/run/swarm/ca.crt"
        assert result["root_read_only"] is True and result["address"] == agent.address
        got = ops_vmhost.GetAgent(pb.GetAgentRequest(tenant_id="acme", agent_id=agent.id)).agent
        assert got.state in (pb.AGENT_STATE_READY, pb.AGENT_STATE_BUSY)  # heartbeats over TLS
        console = (tmp_path / "vmhost" / "vmhost" / "guests" / agent.id / "console.log").read_text()
        assert "SWARM-UP" in console and "swarm-settings" not in console  # the token is never echoed
        ops_vmhost.TerminateAgent(pb.TerminateAgentRequest(tenant_id="acme", agent_id=agent.id))
    finally:
        for stop in reversed(stops):
            stop()
