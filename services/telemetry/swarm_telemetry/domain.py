"""Telemetry's rules: what a storable span is, how a ticket's trace is cut
out of shared traces, and the cost ledger's records, totals and budgets.

No SQL and no protobuf here: `wire.py` converts protos (ours and OTLP's) to
these types, `store_spans.py` / `store_usage.py` keep them, `trace_tree.py`
cuts a ticket's tree out of shared traces, `ledger.py` prices and charges
usage.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from swarmcommon.errors import InvalidArgument
from swarmcommon.pagination import DEFAULT_PAGE_SIZE

# -- spans -------------------------------------------------------------------------------------

# Attributes (on the span or its resource) that say whose a span is.
TENANT_KEY, TICKET_KEY, AGENT_KEY = "swarm.tenant_id", "swarm.ticket_id", "swarm.agent_id"
SERVICE_NAME_KEY = "service.name"

# OTLP times are unsigned 64-bit nanoseconds; the database keeps signed 64-bit
# integers, so anything above this (year 2262) cannot be stored.
MAX_UNIX_NANOS = 2**63 - 1
# Display text is cut to fit; identifiers are never cut (a cut id could name
# someone else's ticket), a span with a longer one is rejected.
MAX_NAME = 256
MAX_STATUS_MESSAGE = 4096
MAX_SERVICE_NAME = 128
MAX_ID = {TENANT_KEY: 128, TICKET_KEY: 64, AGENT_KEY: 128}
MAX_ATTRIBUTES_BYTES = 64 * 1024
MAX_EVENTS_BYTES = 256 * 1024


class SpanKind(enum.StrEnum):
    """OpenTelemetry span kind; None on a span is OTLP's UNSPECIFIED."""

    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class SpanStatus(enum.StrEnum):
    """OpenTelemetry status code; None on a span is OpenTelemetry's "unset"."""

    OK = "ok"
    ERROR = "error"


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass
class Span:
    trace_id: str  # lower-case hex, 32 characters
    span_id: str  # lower-case hex, 16 characters
    parent_span_id: str  # "" for a root
    name: str
    kind: SpanKind | None
    status: SpanStatus | None
    status_message: str
    start_ns: int
    end_ns: int
    # Span and resource attributes merged (span wins).
    attributes: dict[str, Any]
    events: list[SpanEvent]
    service_name: str
    # From `swarm.*` attributes, or inherited from an ancestor when stored;
    # "" when nothing says.
    tenant_id: str = ""
    ticket_id: str = ""
    agent_id: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def key(self) -> tuple[str, str]:
        return (self.trace_id, self.span_id)

    # As JSON, the form they are stored and size-checked in: encoded once.
    @functools.cached_property
    def attributes_json(self) -> str:
        return _json(self.attributes)

    @functools.cached_property
    def events_json(self) -> str:
        events = [{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in self.events]
        return _json(events)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def owner_id(attributes: dict[str, Any], key: str) -> str:
    """A `swarm.*` id from attributes, "" when absent; too long or with a
    NUL character, the span is refused rather than the id cut."""
    raw = attributes.get(key)
    if raw in (None, ""):
        return ""
    value = str(raw)
    if len(value) > MAX_ID[key]:
        raise InvalidArgument(f"attributes.{key}", f"is too long ({len(value)} > {MAX_ID[key]} characters)")
    if "\x00" in value:
        raise InvalidArgument(f"attributes.{key}", "must not contain NUL characters")
    return value


def display_text(field_name: str, value: str, limit: int) -> str:
    """Free text cut to `limit`; a NUL cannot be stored (PostgreSQL text)."""
    if "\x00" in value:
        raise InvalidArgument(field_name, "must not contain NUL characters")
    return value[:limit]


def check_span(span: Span) -> None:
    """Everything the store needs of a span, so one bad span is refused on
    its own instead of failing the statement that stores its whole batch."""
    if span.start_ns <= 0:
        raise InvalidArgument("start_time_unix_nano", "is required")
    if span.start_ns > MAX_UNIX_NANOS:
        raise InvalidArgument("start_time_unix_nano", f"must be below 2^63 (got {span.start_ns})")
    if span.end_ns > MAX_UNIX_NANOS:
        raise InvalidArgument("end_time_unix_nano", f"must be below 2^63 (got {span.end_ns})")
    if span.end_ns < span.start_ns:
        raise InvalidArgument("end_time_unix_nano", "is before start_time_unix_nano")
    size = len(span.attributes_json)
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidArgument(
            "attributes", f"take {size} bytes as JSON, over the limit of {MAX_ATTRIBUTES_BYTES}"
        )
    for i, event in enumerate(span.events):
        if event.time_ns > MAX_UNIX_NANOS:
            raise InvalidArgument(f"events[{i}].time_unix_nano", f"must be below 2^63 (got {event.time_ns})")
    size = len(span.events_json)
    if size > MAX_EVENTS_BYTES:
        raise InvalidArgument("events", f"take {size} bytes as JSON, over the limit of {MAX_EVENTS_BYTES}")


@dataclass(frozen=True)
class Rejection:
    trace_id: str
    span_id: str
    problem: str


@dataclass
class IntakeResult:
    """One OTLP export, checked: the spans to store and the ones refused."""

    accepted: list[Span] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.accepted) + len(self.rejected)


def rejection_message(rejected: list[Rejection], total: int, limit: int = 1024) -> str:
    """OTLP partial success's error_message: how many, and the first problems."""
    head = f"{len(rejected)} of {total} spans rejected"
    parts: list[str] = []
    for r in rejected:
        part = f"span {r.trace_id[:8] or '?'}/{r.span_id[:8] or '?'}: {r.problem}"
        if len(head) + sum(len(p) + 2 for p in parts) + len(part) + 2 > limit:
            parts.append("…")
            break
        parts.append(part)
    return f"{head}: {'; '.join(parts)}"


@dataclass(frozen=True)
class SpanQuery:
    """ListSpans' filters; None means any."""

    tenant_id: str
    trace_id: str | None = None
    ticket_id: str | None = None
    agent_id: str | None = None
    name: str | None = None
    status: SpanStatus | None = None
    min_duration_ns: int | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str = ""


@dataclass(frozen=True)
class TraceSpan:
    """A span placed in a ticket's tree."""

    span: Span
    depth: int
    share_of_total: float


@dataclass(frozen=True)
class TicketTrace:
    ticket_id: str
    trace_ids: list[str]
    start_ns: int
    end_ns: int
    spans: list[TraceSpan]  # depth first; siblings by start time


# -- the cost ledger ---------------------------------------------------------------------------

MAX_TOKENS = 10**12


class RequestType(enum.StrEnum):
    """The agent type that made an LLM call (RecordUsageRequest.request_type)."""

    CODER = "coder"
    REVIEWER = "reviewer"
    SECURITY = "security"
    TESTS = "tests"
    JUDGE = "judge"
    CLARIFIER = "clarifier"
    DECOMPOSER = "decomposer"
    OTHER = "other"


class UsageGroup(enum.StrEnum):
    """One dimension a usage summary is grouped by."""

    PROJECT = "project"
    TICKET = "ticket"
    AGENT_TYPE = "agent_type"
    MODEL = "model"
    DAY = "day"
    MONTH = "month"

    @property
    def is_time(self) -> bool:
        """Time groups are listed in time order; the others by cost."""
        return self in (UsageGroup.DAY, UsageGroup.MONTH)


@dataclass(frozen=True)
class Tokens:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True)
class UsageRequest:
    """One LLM call to record, as the caller reported it."""

    request_id: str
    tenant_id: str
    project_id: str
    ticket_id: str
    agent_id: str
    request_type: RequestType
    provider: str
    model: str
    tokens: Tokens
    usage_at: datetime | None  # None: now


@dataclass(frozen=True)
class UsageRecord:
    """A row of the cost ledger: the call, priced."""

    id: str
    request_id: str
    tenant_id: str
    project_id: str
    ticket_id: str
    agent_id: str
    request_type: RequestType
    provider: str
    model: str
    tokens: Tokens
    cost_usd_micros: int
    price_version: str
    unknown_model: bool
    usage_at: datetime


def _what_was_recorded(r: UsageRequest | UsageRecord) -> tuple[object, ...]:
    # usage_time is left out: a client that buffers records may stamp a retry.
    return (r.project_id, r.ticket_id, r.agent_id, r.request_type, r.provider, r.model, r.tokens)


def replay(first: UsageRecord, retry: UsageRequest) -> UsageRecord:
    """The first answer for a retried RecordUsage; a request_id reused for
    another call is refused rather than silently answered with the first."""
    if _what_was_recorded(first) != _what_was_recorded(retry):
        raise InvalidArgument(
            "request_id",
            f"{retry.request_id!r} was already used for another usage record "
            f"({first.model}, {first.tokens.input_tokens} input / {first.tokens.output_tokens} output "
            "tokens); a retry must repeat the first request",
        )
    return first


_QUOTA_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")


def quota_request_id(request_id: str) -> str:
    """The key quota dedupes a charge on: readable when the caller's id fits
    quota's rules, else a digest of it (quota takes 128 safe characters,
    RecordUsage takes 200 of any kind)."""
    if _QUOTA_SAFE.match(request_id):
        return f"usage:{request_id}"
    return f"usage-sha256:{hashlib.sha256(request_id.encode()).hexdigest()}"


@dataclass(frozen=True)
class Totals:
    request_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd_micros: int = 0
    unknown_model_count: int = 0


@dataclass(frozen=True)
class SummaryQuery:
    tenant_id: str
    group: UsageGroup
    start: datetime | None  # None: the start of the current UTC month
    end: datetime | None  # None: now
    project_id: str | None
    page_size: int
    page_token: str


@dataclass(frozen=True)
class SummaryRow:
    key: str
    totals: Totals
    share_of_cost: float


@dataclass(frozen=True)
class UsageSummary:
    rows: list[SummaryRow]
    total: Totals
    next_page_token: str


def summary_rows(groups: list[tuple[str, Totals]], total: Totals) -> list[SummaryRow]:
    return [
        SummaryRow(key, t, t.cost_usd_micros / total.cost_usd_micros if total.cost_usd_micros else 0.0)
        for key, t in groups
    ]


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


@dataclass(frozen=True)
class Budget:
    allowed: bool
    spent: int
    limit: int | None  # None: unlimited
    reset_at: datetime

    @property
    def remaining(self) -> int:
        return max((self.limit or 0) - self.spent, 0)


def budget(spent: int, limit: int | None, estimated: int, now: datetime) -> Budget:
    """May the tenant spend more this month? With an estimate, the call must
    still fit; without, some budget must be left."""
    if limit is None:
        allowed = True
    elif estimated > 0:
        allowed = spent + estimated <= limit
    else:
        allowed = spent < limit
    return Budget(allowed, spent, limit, next_month(now))


class Budgets(Protocol):
    """Where budgets live (the quota service's COST_USD_MONTH)."""

    def charge(self, tenant_id: str, cost_usd_micros: int, request_id: str) -> None:
        """Add spend that already happened to the tenant's monthly counter."""

    def limit(self, tenant_id: str) -> int | None:
        """The tenant's monthly budget in micro-dollars; None when unlimited."""
