"""The seed's trace waterfall as text, from a GetTicketTraceResponse:

Ticket 3f2a… · 42.1s · trace 4bf92f35…
├─ vm.restore ──────────────     8ms
├─ llm.generate_code ───────   38.1s  ◀ 84% of time
│   ├─ prompt_sent (tokens=2500)
│   └─ response_received (tokens=1200)
└─ git.push ────────────────    3.8s
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

# Durations line up at this column (deeper labels push past it).
COLUMN = 60
HOT = 0.5


def _duration(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.0f}ms"
    return f"{ns / 1_000_000_000:.1f}s"


def _event_label(event: Any) -> str:
    attrs = json_format.MessageToDict(event.attributes)
    detail = ", ".join(
        f"{k}={int(v) if isinstance(v, float) and v.is_integer() else v}" for k, v in attrs.items()
    )
    return f"{event.name} ({detail})" if detail else event.name


def _short(name: str) -> str:
    # "/swarm.ticketing.v1.TicketingService/StartWork" -> "TicketingService/StartWork"
    if name.startswith("/") and name.count("/") == 2:
        service, method = name[1:].split("/")
        return f"{service.rsplit('.', 1)[-1]}/{method}"
    return name


def render_waterfall(trace: Any) -> str:
    """Text for a swarm.telemetry.v1.GetTicketTraceResponse (spans in
    depth-first order with their depth, as the service returns them)."""
    spans = list(trace.spans)
    total = trace.total_duration.ToNanoseconds()
    head = f"Ticket {trace.ticket_id} · {_duration(total)}"
    if trace.trace_ids:
        head += f" · trace {trace.trace_ids[0]}"
    lines = [head]
    # open_levels[d]: whether the branch at depth d continues below (draw │).
    open_levels: list[bool] = []
    services: list[str] = []
    for i, span in enumerate(spans):
        last = True
        for nxt in spans[i + 1 :]:
            if nxt.depth < span.depth:
                break
            if nxt.depth == span.depth:
                last = False
                break
        del open_levels[span.depth :]
        del services[span.depth :]
        guides = "".join("│   " if still_open else "    " for still_open in open_levels)
        label = f"{guides}{'└─' if last else '├─'} {_short(span.name)}"
        if span.service_name and (not services or services[-1] != span.service_name):
            label += f" [{span.service_name}]"
        bar = "─" * max(2, COLUMN - len(label))
        line = f"{label} {bar} {_duration(span.duration.ToNanoseconds()):>7}"
        if span.depth > 0 and span.share_of_total >= HOT:
            line += f"  ◀ {span.share_of_total:.0%} of time"
        lines.append(line)
        open_levels.append(not last)
        services.append(span.service_name)
        pad = "".join("│   " if still_open else "    " for still_open in open_levels)
        for j, event in enumerate(span.events):
            lines.append(f"{pad}{'└─' if j == len(span.events) - 1 else '├─'} {_event_label(event)}")
    return "\n".join(lines)
