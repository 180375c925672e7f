"""A ticket's trace as a tree: the ticket's spans cut out of the traces it
shares with other tickets (pure; the spans come from the store)."""

from __future__ import annotations

from swarm_telemetry.domain import Span, TicketTrace, TraceSpan
from swarmcommon.errors import NotFound

# Deeper ancestry than this is not a real trace (and may be a cycle a client sent).
MAX_ANCESTRY = 10_000


def _ticket_of(span: Span, by_key: dict[tuple[str, str], Span]) -> str | None:
    """The ticket of the nearest ancestor-or-self that names one; "" for the
    shared trunk (up to a root naming none); None for a span cut off from its
    root (a parent never arrived) that names no ticket: whose it is cannot be
    told, so it is not shown."""
    node: Span | None = span
    for _ in range(MAX_ANCESTRY):
        if node is None:
            return None
        if node.ticket_id:
            return node.ticket_id
        if not node.parent_span_id:
            return ""
        node = by_key.get((node.trace_id, node.parent_span_id))
    return None


def ticket_trace(tenant_id: str, ticket_id: str, candidates: list[Span]) -> TicketTrace:
    """The ticket's spans as a tree, out of every span of the traces its
    spans are in (`candidates`, by start time): spans of the shared trunk
    (say, the request that created the project) belong to no ticket and are
    kept; branches under another ticket, or spans another tenant sent, are not."""
    by_key = {s.key: s for s in candidates}
    kept = [
        s for s in candidates if s.tenant_id in ("", tenant_id) and _ticket_of(s, by_key) in ("", ticket_id)
    ]
    if not any(s.ticket_id == ticket_id and s.tenant_id == tenant_id for s in kept):
        raise NotFound(f"no trace for ticket {ticket_id}", resource_type="ticket", resource_name=ticket_id)
    start, end = min(s.start_ns for s in kept), max(s.end_ns for s in kept)
    total = max(end - start, 1)
    children: dict[tuple[str, str], list[Span]] = {s.key: [] for s in kept}
    roots: list[Span] = []
    for s in kept:  # already in start order, so children end up ordered too
        parent = (s.trace_id, s.parent_span_id)
        if s.parent_span_id and parent in children:
            children[parent].append(s)
        else:
            roots.append(s)
    ordered: list[TraceSpan] = []
    stack = [(r, 0) for r in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        ordered.append(TraceSpan(node, depth, node.duration_ns / total))
        stack.extend((c, depth + 1) for c in reversed(children[node.key]))
    trace_ids = list(dict.fromkeys(s.trace_id for s in kept))
    return TicketTrace(ticket_id, trace_ids, start, end, ordered)
