"""The seed's trace view as text, from a GetTicketTraceResponse:

┌─────────────────────────────────────────────────────────────────┐
│  Ticket 3f2a… - Agent Execution Trace                           │
├─────────────────────────────────────────────────────────────────┤
│  Total Duration: 45.2s · LLM Cost: $0.0420 (2 calls)            │
│                                                                 │
│  ├─ vm.restore ─────────────  8ms                               │
│  ├─ llm.generate_code ──────  38.1s  ◀ 84% of time              │
│  │   ├─ prompt_sent (2.5k tokens)                               │
│  │   └─ response_received (1.2k tokens)                         │
│  ├─ file.write (3 files) ───  45ms                              │
│  └─ git.push ───────────────  3.8s                              │
│                                                                 │
│  Attributes: { files_generated: 3, model: "claude-sonnet" }     │
└─────────────────────────────────────────────────────────────────┘

Durations line up in one column (pushed right by the longest label), the
box widens to the longest line, and the attributes shown are the hottest
span's own (resource and transport attributes left out).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

# The seed's box: 65 characters inside the borders, at least.
INNER = 65
# Durations start at this column at least (the seed's "├─ llm.generate_code ──────").
COLUMN = 28
HOT = 0.5
# Attributes every span carries (resource, transport, ids the header shows):
# not what the reader of one span's attributes is after.
_NOISE_PREFIXES = (
    "service.", "telemetry.", "process.", "host.", "os.", "rpc.", "net.", "network.",
    "server.", "client.", "http.", "url.", "user_agent.",
)  # fmt: skip
_NOISE = {"swarm.tenant_id", "swarm.ticket_id", "swarm.agent_id"}


def _duration(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.0f}ms"
    return f"{ns / 1_000_000_000:.1f}s"


def _count(n: float) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else f"{n:g}"


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _event_label(event: Any) -> str:
    attrs = {k: _plain(v) for k, v in json_format.MessageToDict(event.attributes).items()}
    if isinstance(attrs.get("tokens"), int | float):
        return f"{event.name} ({_count(attrs['tokens'])} tokens)"
    detail = ", ".join(f"{k}={v}" for k, v in attrs.items())
    return f"{event.name} ({detail})" if detail else event.name


def _short(name: str) -> str:
    # "/swarm.ticketing.v1.TicketingService/StartWork" -> "TicketingService/StartWork"
    if name.startswith("/") and name.count("/") == 2:
        service, method = name[1:].split("/")
        return f"{service.rsplit('.', 1)[-1]}/{method}"
    return name


def _span_label(span: Any) -> str:
    files = _plain(json_format.MessageToDict(span.attributes).get("files"))
    if not isinstance(files, int):
        return _short(span.name)
    return f"{_short(span.name)} ({files} {'file' if files == 1 else 'files'})"


def _own_attributes(span: Any) -> str:
    attrs = {
        k: _plain(v)
        for k, v in sorted(json_format.MessageToDict(span.attributes).items())
        if k not in _NOISE and not k.startswith(_NOISE_PREFIXES)
    }
    if not attrs:
        return ""
    return "{ " + ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in attrs.items()) + " }"


def _last_flags(spans: list[Any]) -> list[bool]:
    """Whether each span is the last child of its parent (└─ rather than ├─)."""
    flags = []
    for i, span in enumerate(spans):
        last = True
        for nxt in spans[i + 1 :]:
            if nxt.depth < span.depth:
                break
            if nxt.depth == span.depth:
                last = False
                break
        flags.append(last)
    return flags


def _hottest(spans: list[Any]) -> int | None:
    """Where the time went: the deepest span taking at least HOT of the total
    (its ancestors took as long, but only because of it)."""
    found = None
    for i, span in enumerate(spans):
        if span.share_of_total < HOT:
            continue
        children = []
        for nxt in spans[i + 1 :]:
            if nxt.depth <= span.depth:
                break
            if nxt.depth == span.depth + 1:
                children.append(nxt)
        if not any(c.share_of_total >= HOT for c in children):
            found = i if found is None or span.share_of_total > spans[found].share_of_total else found
    return found


def _tree(spans: list[Any], hot: int | None) -> list[str]:
    lasts = _last_flags(spans)
    rows: list[tuple[str, Any] | str] = []  # (label, span) to align, or a finished event line
    open_levels: list[bool] = []  # open_levels[d]: the branch at depth d continues below (│)
    # A trace through several services names each span's service where it
    # changes from its parent's (or, for a root, the previous root's).
    tagged = len({s.service_name for s in spans}) > 1
    services: list[str] = []
    for i, (span, last) in enumerate(zip(spans, lasts, strict=True)):
        del open_levels[span.depth :]
        del services[span.depth + 1 :]
        guides = "".join("│   " if still_open else "    " for still_open in open_levels)
        label = f"{guides}{'└─' if last else '├─'} {_span_label(span)}"
        above = services[span.depth - 1] if span.depth else (services[0] if services else "")
        if tagged and span.service_name and span.service_name != above:
            label += f" [{span.service_name}]"
        rows.append((label, span))
        open_levels.append(not last)
        del services[span.depth :]
        services.append(span.service_name)
        pad = "".join("│   " if still_open else "    " for still_open in open_levels)
        # Its events come before its children: the last event closes the
        # branch only when no child span follows.
        children = i + 1 < len(spans) and spans[i + 1].depth > span.depth
        for j, event in enumerate(span.events):
            closes = j == len(span.events) - 1 and not children
            rows.append(f"{pad}{'└─' if closes else '├─'} {_event_label(event)}")
    column = max([COLUMN, *(len(r[0]) + 4 for r in rows if isinstance(r, tuple))])
    lines = []
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
            continue
        label, span = row
        line = f"{label} {'─' * (column - len(label) - 2)}  {_duration(span.duration.ToNanoseconds())}"
        if hot is not None and span is spans[hot]:
            line += f"  ◀ {span.share_of_total:.0%} of time"
        lines.append(line)
    return lines


def _header(trace: Any) -> list[str]:
    head = f"Total Duration: {_duration(trace.total_duration.ToNanoseconds())}"
    if trace.llm_call_count:
        calls = "call" if trace.llm_call_count == 1 else "calls"
        head += f" · LLM Cost: ${trace.cost_usd_micros / 1e6:.4f} ({trace.llm_call_count} {calls})"
    lines = [head]
    if trace.trace_ids:
        more = f" (+{len(trace.trace_ids) - 1} more)" if len(trace.trace_ids) > 1 else ""
        lines.append(f"Trace: {trace.trace_ids[0]}{more}")
    return lines


def _hot_attributes(spans: list[Any], hot: int | None) -> str:
    """The hottest span's own attributes or, when it has none (an SDK's
    span, say), those of the nearest ancestor that took as long."""
    i = hot
    while i is not None:
        found = _own_attributes(spans[i])
        if found or spans[i].share_of_total < HOT or spans[i].depth == 0:
            return found if spans[i].share_of_total >= HOT else ""
        depth = spans[i].depth
        i = next((j for j in range(i - 1, -1, -1) if spans[j].depth < depth), None)
    return ""


def render_waterfall(trace: Any) -> str:
    """Text for a swarm.telemetry.v1.GetTicketTraceResponse (spans in
    depth-first order with their depth, as the service returns them)."""
    spans = list(trace.spans)
    hot = _hottest(spans)
    body = [*_header(trace), "", *_tree(spans, hot)]
    attributes = _hot_attributes(spans, hot)
    if attributes:
        body += ["", f"Attributes: {attributes}"]
    title = f"Ticket {trace.ticket_id} - Agent Execution Trace"
    inner = max([INNER, *(len(line) + 4 for line in [title, *body])])

    def boxed(line: str) -> str:
        return f"│  {line.ljust(inner - 2)}│"

    return "\n".join(
        [
            f"┌{'─' * inner}┐",
            boxed(title),
            f"├{'─' * inner}┤",
            *(boxed(line) for line in body),
            f"└{'─' * inner}┘",
        ]
    )
