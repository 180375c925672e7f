"""Protobuf <-> domain, including every check on caller input.

Raw protos stop here: the servicer hands domain objects to the store and
gets domain objects back.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarm_ticketing.domain import (
    DEFAULT_ENSEMBLE_SIZE,
    MAX_COST_CAP,
    MAX_DESCRIPTION,
    MAX_ENSEMBLE_SIZE,
    MAX_JSON,
    MAX_KEY,
    MAX_NAME,
    MAX_PRIORITY,
    MAX_STAGES,
    MIN_ENSEMBLE_SIZE,
    MIN_PRIORITY,
    PATTERN_STAGES,
    AgentRole,
    Claim,
    CollaborationPattern,
    CostCapSource,
    EnsembleAttempt,
    Lease,
    MergeRequest,
    MergeRequestState,
    Project,
    ProjectSpec,
    QuarantineCause,
    SpendGrant,
    Ticket,
    TicketEdit,
    TicketEvent,
    TicketSpec,
    TicketState,
    TicketType,
)
from swarm_ticketing.estimation import Estimate
from swarm_ticketing.templates import Resolved, TemplateVersion
from swarmcommon import validation as v
from swarmcommon.enums import EnumCodec
from swarmcommon.errors import InvalidArgument
from swarmcommon.gitnames import branch_problem, commit_problem
from swarmcommon.protos import timestamp as _ts

ROLE = EnumCodec(pb.AgentRole, AgentRole)
STATE = EnumCodec(pb.TicketState, TicketState)
TYPE = EnumCodec(pb.TicketType, TicketType)
MERGE_REQUEST_STATE = EnumCodec(pb.MergeRequestState, MergeRequestState)
QUARANTINE_CAUSE = EnumCodec(pb.QuarantineCause, QuarantineCause)
COST_CAP_SOURCE = EnumCodec(pb.CostCapSource, CostCapSource)
PATTERN = EnumCodec(pb.CollaborationPattern, CollaborationPattern)


# Every mutating call that carries a request_id (ClaimTicket's is keyed per agent; see stores/claims.py).
MutatingRequest = (
    pb.CreateProjectRequest
    | pb.RenewLeaseRequest
    | pb.StartWorkRequest
    | pb.SubmitWorkRequest
    | pb.ReportFailureRequest
    | pb.ReleaseClaimRequest
    | pb.ReleaseAgentClaimsRequest
    | pb.RedriveTicketsRequest
    | pb.ReleaseForBudgetRequest
    | pb.SetTicketCostCapRequest
    | pb.CancelTicketRequest
    | pb.CancelProjectRequest
    | pb.UpdateTicketRequest
)


def json_object(field: str, raw: str) -> str:
    """Validated, canonical JSON object text ('' stays '{}')."""
    if not raw:
        return "{}"
    if len(raw) > MAX_JSON:
        raise InvalidArgument(field, f"is too large ({len(raw)} > {MAX_JSON} bytes)")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(field, f"is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidArgument(field, "must be a JSON object")
    return json.dumps(value, separators=(",", ":"))


def git_refs(field: str, canonical: str) -> str:
    """A result's or failure's git names checked (they reach git in other
    agents' hands): `branch` a plain branch name, `commit` and `merge_commit`
    full commit ids (or empty). Returns `canonical` unchanged."""
    value = json.loads(canonical)
    branch = value.get("branch")
    if branch is not None:
        problem = branch_problem(branch) if isinstance(branch, str) else "must be a string"
        if problem:
            raise InvalidArgument(f"{field}.branch", problem)
    for key in ("commit", "merge_commit"):
        commit = value.get(key)
        if commit not in (None, ""):  # "": no commit (nothing changed)
            problem = commit_problem(commit) if isinstance(commit, str) else "must be a string"
            if problem:
                raise InvalidArgument(f"{field}.{key}", problem)
    return canonical


def duration_from_proto(
    msg: pb.ClaimTicketRequest | pb.RenewLeaseRequest,
) -> timedelta | None:
    if not msg.HasField("lease_duration"):
        return None
    d: Duration = msg.lease_duration
    if d.seconds < 0 or d.nanos < 0:
        raise InvalidArgument("lease_duration", "must be positive")
    delta: timedelta = d.ToTimedelta()
    return delta


def project_spec_from_proto(req: pb.CreateProjectRequest) -> ProjectSpec:
    tenant = v.name_id("tenant_id", req.tenant_id)
    pattern = PATTERN.from_proto("pattern", req.pattern) or CollaborationPattern.CUSTOM
    specs = []
    for i, t in enumerate(req.tickets):
        f = f"tickets[{i}]"
        stages = tuple(_stage(f"{f}.stages[{j}]", s) for j, s in enumerate(t.stages))
        if len(stages) > MAX_STAGES:
            raise InvalidArgument(f"{f}.stages", f"too many stages ({len(stages)} > {MAX_STAGES})")
        if not MIN_PRIORITY <= t.priority <= MAX_PRIORITY:
            raise InvalidArgument(f"{f}.priority", f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}")
        specs.append(
            TicketSpec(
                key=v.bounded_text(f"{f}.key", t.key, MAX_KEY) or str(i),
                name=v.required_text(f"{f}.name", t.name, MAX_NAME),
                description=v.bounded_text(f"{f}.description", t.description, MAX_DESCRIPTION),
                type=TYPE.from_proto(f"{f}.type", t.type) or TicketType.FEATURE,
                priority=t.priority,
                depends_on=tuple(t.depends_on),
                cost_cap_usd_micros=optional_cap(t, "cost_cap_usd_micros", f"{f}.cost_cap_usd_micros"),
                **_collaboration(f, t, stages, pattern),
            )
        )
    return ProjectSpec(
        tenant_id=tenant,
        name=v.required_text("name", req.name, MAX_NAME),
        description=v.bounded_text("description", req.description, MAX_DESCRIPTION),
        tickets=tuple(specs),
        repository=_repository(req.repository),
        base_branch=_branch(req.base_branch or "main"),
        ticket_cost_cap_usd_micros=optional_cap(
            req, "ticket_cost_cap_usd_micros", "ticket_cost_cap_usd_micros"
        ),
        pattern=pattern,
    )


def _collaboration(
    f: str, t: pb.TicketSpec, stages: tuple[AgentRole, ...], default: CollaborationPattern
) -> dict[str, Any]:
    """A ticket's pattern and the stages it means: its own pattern, else its
    listed stages, else the project's pattern; an ensemble's size and quorum."""
    pattern = PATTERN.from_proto(f"{f}.pattern", t.pattern)
    if pattern not in (None, CollaborationPattern.CUSTOM) and stages:
        raise InvalidArgument(f"{f}.stages", f"give stages or a pattern ({pattern}), not both")
    if pattern is None:
        pattern = CollaborationPattern.CUSTOM if stages else default
    size = quorum = 0
    if pattern == CollaborationPattern.ENSEMBLE:
        size = t.ensemble_size or DEFAULT_ENSEMBLE_SIZE
        if not MIN_ENSEMBLE_SIZE <= size <= MAX_ENSEMBLE_SIZE:
            bounds = f"between {MIN_ENSEMBLE_SIZE} and {MAX_ENSEMBLE_SIZE}"
            raise InvalidArgument(f"{f}.ensemble_size", f"must be {bounds} (got {size})")
        quorum = t.ensemble_quorum or size
        if not 1 <= quorum <= size:
            bounds = f"between 1 and ensemble_size {size}"
            raise InvalidArgument(f"{f}.ensemble_quorum", f"must be {bounds} (got {quorum})")
    elif t.ensemble_size or t.ensemble_quorum:
        field = "ensemble_size" if t.ensemble_size else "ensemble_quorum"
        raise InvalidArgument(f"{f}.{field}", f"only an ensemble has attempts (pattern is {pattern})")
    return {
        "pattern": pattern,
        "stages": PATTERN_STAGES.get(pattern) or stages or (AgentRole.CODER,),
        "ensemble_size": size,
        "ensemble_quorum": quorum,
    }


def ticket_edit_from_proto(req: pb.UpdateTicketRequest) -> TicketEdit:
    """The parts of a ticket an UpdateTicket changes, checked as at creation."""
    description = (
        v.bounded_text("description", req.description, MAX_DESCRIPTION)
        if req.HasField("description")
        else None
    )
    if req.HasField("priority") and not MIN_PRIORITY <= req.priority <= MAX_PRIORITY:
        raise InvalidArgument("priority", f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}")
    stages = tuple(_stage(f"stages[{j}]", s) for j, s in enumerate(req.stages))
    if len(stages) > MAX_STAGES:
        raise InvalidArgument("stages", f"too many stages ({len(stages)} > {MAX_STAGES})")
    edit = TicketEdit(description, req.priority if req.HasField("priority") else None, stages or None)
    if edit == TicketEdit():
        raise InvalidArgument("ticket", "nothing to change: give a description, a priority or stages")
    return edit


CapMessage = pb.TicketSpec | pb.CreateProjectRequest | pb.SetTicketCostCapRequest


def optional_cap(msg: CapMessage, name: str, field: str) -> int | None:
    """A cost cap in micro-dollars if the message sets one (0 admits no spend)."""
    if not msg.HasField(name):
        return None
    return cost_cap(field, int(getattr(msg, name)))


def cost_cap(field: str, value: int) -> int:
    if not 0 <= value <= MAX_COST_CAP:
        raise InvalidArgument(field, f"must be between 0 and {MAX_COST_CAP} micro-dollars (got {value})")
    return value


def _repository(value: str) -> str:
    """The repository's length and characters; which repositories a tenant
    may name is swarm_ticketing.repositories' check, made by the servicer."""
    return v.bounded_text("repository", value, 2048)


BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,250}(?<!/)(?<!\.lock)$")


def _branch(value: str) -> str:
    if not BRANCH_RE.match(value):
        raise InvalidArgument("base_branch", f"is not a valid branch name: {value[:60]!r}")
    return value


def _stage(field: str, number: int) -> AgentRole:
    role = ROLE.from_proto(field, number)
    if role is None:
        raise InvalidArgument(field, "must name a role (AGENT_ROLE_UNSPECIFIED is not a stage)")
    return role


def lease_to_proto(lease: Lease) -> pb.Lease:
    return pb.Lease(
        claim_token=lease.claim_token,
        agent_id=lease.agent_id,
        expire_time=_ts(lease.expires_at),
    )


def template_to_proto(r: Resolved | None) -> pb.AgentTemplateVersion | None:
    return None if r is None else version_to_proto(r.version, r.deployment_id, r.canary)


def version_to_proto(
    v: TemplateVersion, deployment_id: str = "", canary: bool = False
) -> pb.AgentTemplateVersion:
    return pb.AgentTemplateVersion(
        template_slug=v.slug,
        version=v.version,
        agent_type=v.agent_type,
        prompt=v.prompt,
        model=v.model,
        parameters_json=json.dumps(v.parameters, separators=(",", ":")),
        tools_json=json.dumps(v.tools, separators=(",", ":")),
        version_id=v.id,
        deployment_id=deployment_id,
        canary=canary,
    )


def ticket_to_proto(t: Ticket) -> pb.Ticket:
    msg = pb.Ticket(
        id=t.id,
        tenant_id=t.tenant_id,
        project_id=t.project_id,
        name=t.name,
        description=t.description,
        type=TYPE.to_proto(t.type),  # type: ignore[arg-type]
        priority=t.priority,
        state=STATE.to_proto(t.state),  # type: ignore[arg-type]
        stages=[ROLE.to_proto(s) for s in t.stages],  # type: ignore[misc]
        stage_index=t.stage_index,
        depends_on=list(t.depends_on),
        failure_count=t.failure_count,
        last_failure_reason=t.last_failure_reason or "",
        last_failure_time=_ts(t.last_failure_at),
        quarantine_reason=t.quarantine_reason or "",
        quarantine_time=_ts(t.quarantined_at),
        result_json=t.result_json or "",
        traceparent=t.traceparent or "",
        repository=t.repository,
        base_branch=t.base_branch,
        cost_cap_usd_micros=t.cost_cap_usd_micros,
        quarantine_cause=QUARANTINE_CAUSE.to_proto(t.quarantine_cause),  # type: ignore[arg-type]
        pattern=PATTERN.to_proto(t.pattern),  # type: ignore[arg-type]
        ensemble_ticket_id=t.ensemble_ticket_id or "",
        attempt=t.attempt,
        estimate=_estimate_to_proto(t.estimate),
        actual_minutes=t.actual_minutes,
        create_time=_ts(t.created_at),
        update_time=_ts(t.updated_at),
    )
    if t.lease is not None:
        msg.lease.CopyFrom(lease_to_proto(t.lease))
    return msg


def _estimate_to_proto(e: Estimate | None) -> pb.TicketEstimate | None:
    if e is None:
        return None
    return pb.TicketEstimate(
        complexity_score=e.complexity,
        optimistic_minutes=e.optimistic,
        expected_minutes=e.expected,
        pessimistic_minutes=e.pessimistic,
        confidence=e.confidence.value,
    )


def project_to_proto(p: Project) -> pb.Project:
    return pb.Project(
        id=p.id,
        tenant_id=p.tenant_id,
        name=p.name,
        description=p.description,
        ticket_count=p.ticket_count,
        done_count=p.done_count,
        create_time=_ts(p.created_at),
        repository=p.repository,
        base_branch=p.base_branch,
        ticket_cost_cap_usd_micros=p.ticket_cost_cap_usd_micros,
        pattern=PATTERN.to_proto(p.pattern),  # type: ignore[arg-type]
    )


def attempts_to_proto(claim: Claim) -> list[pb.EnsembleAttempt]:
    return [_attempt_to_proto(a) for a in claim.attempts]


def _attempt_to_proto(a: EnsembleAttempt) -> pb.EnsembleAttempt:
    return pb.EnsembleAttempt(
        ticket_id=a.ticket_id,
        attempt=a.attempt,
        state=STATE.to_proto(a.state),  # type: ignore[arg-type]
        result_json=a.result_json or "",
        last_failure_reason=a.last_failure_reason or "",
        rejected=a.rejected,
    )


def grant_to_proto(g: SpendGrant) -> pb.AuthorizeTicketSpendResponse:
    return pb.AuthorizeTicketSpendResponse(
        ticket_id=g.ticket_id,
        project_id=g.project_id,
        cost_cap_usd_micros=g.cost_cap_usd_micros,
        cost_cap_source=COST_CAP_SOURCE.to_proto(g.source),  # type: ignore[arg-type]
    )


def event_to_proto(e: TicketEvent) -> pb.TicketEvent:
    return pb.TicketEvent(
        id=e.id,
        ticket_id=e.ticket_id,
        event_type=e.event_type,
        actor_type=e.actor_type.value,
        actor_id=e.actor_id or "",
        old_value_json=e.old_value or "",
        new_value_json=e.new_value or "",
        rationale=e.rationale or "",
        create_time=_ts(e.created_at),
    )


def merge_request_to_proto(mr: MergeRequest) -> pb.MergeRequest:
    return pb.MergeRequest(
        id=mr.id,
        tenant_id=mr.tenant_id,
        project_id=mr.project_id,
        ticket_id=mr.ticket_id,
        branch=mr.branch,
        commit=mr.commit,
        state=MERGE_REQUEST_STATE.to_proto(mr.state),  # type: ignore[arg-type]
        merge_commit=mr.merge_commit or "",
        review_comments=mr.review_comments or "",
        author_agent_id=mr.author_agent_id or "",
        reviewer_agent_id=mr.reviewer_agent_id or "",
        create_time=_ts(mr.created_at),
        update_time=_ts(mr.updated_at),
    )
