"""The text waterfall has the seed's layout (§8, "Dashboard Trace View"):
checked character for character on the seed's own example, and on a real
multi-service tree's shape."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct

from swarm.telemetry.v1 import telemetry_pb2 as pb
from swarmcommon.waterfall import render_waterfall

MS = 1_000_000
TOTAL = 45_200 * MS


def _struct(**values: object) -> Struct:
    s = Struct()
    s.update(values)
    return s


def _span(name: str, ms: float, depth: int = 0, service: str = "swarm-agent", **attrs: object) -> pb.Span:
    ns = int(ms * MS)
    return pb.Span(
        name=name,
        depth=depth,
        duration=Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000),
        share_of_total=ns / TOTAL,
        service_name=service,
        attributes=_struct(**{"service.name": service, "swarm.ticket_id": "47", **attrs}),
    )


def _seed_trace() -> pb.GetTicketTraceResponse:
    llm = _span("llm.generate_code", 38_100, files_generated=3, model="claude-sonnet")
    llm.events.add(name="prompt_sent", attributes=_struct(tokens=2500, messages=1))
    llm.events.add(name="response_received", attributes=_struct(tokens=1200))
    return pb.GetTicketTraceResponse(
        ticket_id="47",
        total_duration=Duration(seconds=45, nanos=200_000_000),
        spans=[
            _span("vm.restore", 8),
            _span("git.clone", 2_300),
            llm,
            _span("file.write", 45, files=3),
            _span("git.commit", 890),
            _span("git.push", 3_800),
        ],
    )


SEED = """\
┌─────────────────────────────────────────────────────────────────┐
│  Ticket 47 - Agent Execution Trace                              │
├─────────────────────────────────────────────────────────────────┤
│  Total Duration: 45.2s                                          │
│                                                                 │
│  ├─ vm.restore ─────────────  8ms                               │
│  ├─ git.clone ──────────────  2.3s                              │
│  ├─ llm.generate_code ──────  38.1s  ◀ 84% of time              │
│  │   ├─ prompt_sent (2.5k tokens)                               │
│  │   └─ response_received (1.2k tokens)                         │
│  ├─ file.write (3 files) ───  45ms                              │
│  ├─ git.commit ─────────────  890ms                             │
│  └─ git.push ───────────────  3.8s                              │
│                                                                 │
│  Attributes: { files_generated: 3, model: "claude-sonnet" }     │
└─────────────────────────────────────────────────────────────────┘"""


def test_the_seeds_example_renders_exactly_as_the_seed_draws_it() -> None:
    assert render_waterfall(_seed_trace()) == SEED


def test_a_multi_service_tree_names_services_cost_and_where_the_time_went() -> None:
    """A real ticket's tree: gateway -> ticketing -> the agent; the marker
    sits on the deepest span that took most of the time, not on its
    ancestors; a span's events come before its children, the branch left
    open for them; the header carries the ticket's LLM cost."""
    root = _span("POST /api/projects", 45_200, 0, "gateway", **{"http.route": "/api/projects"})
    create = _span("/swarm.ticketing.v1.TicketingService/CreateProject", 45_000, 1, "ticketing")
    work = _span("agent.work", 44_000, 2, "swarm-agent", **{"swarm.role": "coder"})
    llm = _span("llm.generate_code", 40_000, 3, "swarm-agent", **{"gen_ai.request.model": "m"})
    llm.events.add(name="prompt_sent", attributes=_struct(tokens=900))
    call = _span("anthropic.messages.create", 39_000, 4, "swarm-agent")
    write = _span("file.write", 5, 3, "swarm-agent", files=1)
    push = _span("git.push", 1_000, 3, "swarm-agent")
    trace = pb.GetTicketTraceResponse(
        ticket_id="0f5c",
        trace_ids=["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b700f067aa0ba902b7"],
        total_duration=Duration(seconds=45, nanos=200_000_000),
        spans=[root, create, work, llm, call, write, push],
        llm_call_count=2,
        cost_usd_micros=42_000,
    )
    assert render_waterfall(trace) == MULTI


MULTI = """\
┌──────────────────────────────────────────────────────────────────────────────┐
│  Ticket 0f5c - Agent Execution Trace                                         │
├──────────────────────────────────────────────────────────────────────────────┤
│  Total Duration: 45.2s · LLM Cost: $0.0420 (2 calls)                         │
│  Trace: 4bf92f3577b34da6a3ce929d0e0e4736 (+1 more)                           │
│                                                                              │
│  └─ POST /api/projects [gateway] ────────────────────  45.2s                 │
│      └─ TicketingService/CreateProject [ticketing] ──  45.0s                 │
│          └─ agent.work [swarm-agent] ────────────────  44.0s                 │
│              ├─ llm.generate_code ───────────────────  40.0s                 │
│              │   ├─ prompt_sent (900 tokens)                                 │
│              │   └─ anthropic.messages.create ───────  39.0s  ◀ 86% of time  │
│              ├─ file.write (1 file) ─────────────────  5ms                   │
│              └─ git.push ────────────────────────────  1.0s                  │
│                                                                              │
│  Attributes: { gen_ai.request.model: "m" }                                   │
└──────────────────────────────────────────────────────────────────────────────┘"""
