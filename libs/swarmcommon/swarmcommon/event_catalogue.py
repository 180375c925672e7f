"""Every event type a Swarm service emits, with a JSON Schema of its payload.

One table for three readers: the events service refuses subscriptions and
filters naming a type that is not here (`ticket.typo` would otherwise never
fire), the gateway serves it as `GET /api/event-types`, and the tests check
real payloads against it, so a producer that drops a field integrations key
on fails a test instead of an integration. Schemas name the fields a
consumer may rely on (`required`) and leave room for more
(`additionalProperties`): payloads grow compatibly, they never shrink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]

_ID = {"type": "string", "minLength": 1}
_TEXT = {"type": "string"}
_OPT_TEXT = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_IDS = {"type": "array", "items": _ID}


@dataclass(frozen=True)
class EventType:
    name: str
    producer: str
    description: str
    payload_schema: Schema
    # In the seed's list of 14 (the rest came with later features).
    in_seed: bool = False


def _object(required: Mapping[str, Any], optional: Mapping[str, Any] | None = None) -> Schema:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": True,
    }


_TICKET = {
    "ticket_id": _ID,
    "project_id": _ID,
    "title": _TEXT,
    "state": _TEXT,
    "stage": _TEXT,
    "failure_count": _COUNT,
}
_PULL_REQUEST = {
    "type": "object",
    "required": ["merge_request_id", "branch", "commit", "merge_commit"],
    "properties": {"merge_request_id": _ID, "branch": _TEXT, "commit": _OPT_TEXT, "merge_commit": _OPT_TEXT},
}
_MERGE_REQUEST = {
    "merge_request_id": _ID,
    "ticket_id": _ID,
    "project_id": _ID,
    "title": _TEXT,
    "branch": _TEXT,
    "commit": _OPT_TEXT,
    "merge_commit": _OPT_TEXT,
    "review_comments": _OPT_TEXT,
    "author_agent_id": _OPT_TEXT,
    "reviewer_agent_id": _OPT_TEXT,
}
_AGENT = {"agent_id": _ID, "template": _TEXT, "role": _TEXT, "driver": _TEXT, "address": _OPT_TEXT}
_DEPLOYMENT = {
    "deployment_id": _ID,
    "agent_type": _TEXT,
    "version_id": _ID,
    "status": _TEXT,
    "rollout_percent": {"type": "integer", "minimum": 0, "maximum": 100},
    "previous_rollout_percent": {"type": "integer", "minimum": 0, "maximum": 100},
    "success_count": _COUNT,
    "failure_count": _COUNT,
    "failure_rate": {"type": "number", "minimum": 0, "maximum": 1},
    "reason": _OPT_TEXT,
    "actor": _TEXT,
}
_AGENT_REF = {"agent_id": _OPT_TEXT}
_REASON = {"reason": _TEXT}


def _ticket(name: str, description: str, extra: Schema | None = None, in_seed: bool = True) -> EventType:
    return EventType(name, "ticketing", description, _object(_TICKET, extra), in_seed)


def _pr(name: str, description: str, in_seed: bool = True) -> EventType:
    return EventType(name, "ticketing", description, _object(_MERGE_REQUEST), in_seed)


def _agent(name: str, description: str, extra: Schema) -> EventType:
    return EventType(name, "vmhost", description, _object(_AGENT, extra), in_seed=True)


_TYPES = [
    _ticket("ticket.created", "A project's spec created the ticket.", {"depends_on": _IDS}),
    _ticket("ticket.assigned", "An agent claimed the ticket's current stage.", _AGENT_REF),
    _ticket("ticket.in_progress", "The claiming agent started working (its first heartbeat).", _AGENT_REF),
    _ticket(
        "ticket.completed",
        "The last stage finished; `pull_request` links the merged branch.",
        {
            **_AGENT_REF,
            "duration_seconds": {"type": "number", "minimum": 0},
            "pull_request": _PULL_REQUEST,
            "actual_minutes": {"type": "number", "minimum": 0},
            "estimated_minutes": {"type": ["number", "null"]},
        },
    ),
    _ticket("ticket.failed", "A stage attempt failed (reported, rejected or its lease lost).", _REASON),
    _ticket("ticket.quarantined", "Too many failures: the ticket is a dead letter.", _REASON),
    _ticket(
        "ticket.budget_exceeded",
        "The ticket's LLM cost reached its cap.",
        _REASON,
        in_seed=False,
    ),
    _ticket("ticket.cancelled", "An operator cancelled the ticket.", {**_REASON, "by": _TEXT}, in_seed=False),
    _pr("pr.opened", "A coder's branch became a merge request."),
    _pr("pr.merged", "The reviewer merged the ticket's branch."),
    _pr("pr.rejected", "The reviewer sent the branch back with comments."),
    _pr("pr.closed", "The merge request was closed unmerged (cancel or rollback).", in_seed=False),
    EventType(
        "project.design_complete",
        "ticketing",
        "The project's design tickets are all done.",
        _object({"project_id": _ID, "design_ticket_ids": _IDS}),
        in_seed=True,
    ),
    EventType(
        "project.rolled_back",
        "ticketing",
        "The project's base branch was reset to a snapshot.",
        _object(
            {
                "rollback_id": _ID,
                "branch": _TEXT,
                "previous_head": _OPT_TEXT,
                "pre_rollback_snapshot_id": _OPT_TEXT,
                "cancelled_ticket_ids": _IDS,
                "closed_merge_request_ids": _IDS,
                "by": _TEXT,
            }
        ),
    ),
    _ticket(
        "collaboration.stage_complete",
        "A stage of the ticket's collaboration pattern finished.",
        _AGENT_REF,
    ),
    EventType("template.promoted", "ticketing", "A deployment moved up its ladder.", _object(_DEPLOYMENT)),
    EventType("template.rolled_back", "ticketing", "A deployment rolled back.", _object(_DEPLOYMENT)),
    _agent("agent.started", "vmhost started the agent's guest.", {"unenforced_limits": {"type": "array"}}),
    _agent("agent.completed", "The agent's guest ended normally.", _REASON),
    _agent("agent.failed", "The agent's guest failed or was failed by self-healing.", _REASON),
    EventType(
        "agent.healed",
        "vmhost",
        "A self-healing step ran (check, action, outcome).",
        _object(
            {"incident_id": _ID, "check_name": _TEXT, "action": _TEXT, "outcome": _TEXT, "ticket_ids": _IDS},
            {"agent_id": _OPT_TEXT, "detail": _OPT_TEXT, "error": _OPT_TEXT},
        ),
    ),
    EventType(
        "webhook.test",
        "events",
        "A test event an operator sent to one webhook.",
        _object({}),
    ),
    EventType(
        "webhook.disabled",
        "events",
        "A webhook was disabled after failing for too long.",
        _object({"webhook_id": _ID, "url": _TEXT, "reason": _TEXT}),
    ),
    EventType(
        "outbox.dead_lettered",
        "any",
        "A service could not deliver one of its events to the events service.",
        _object({"event_id": _ID, "event_type": _TEXT, "reason": _TEXT, "payload_bytes": _COUNT}),
    ),
]

CATALOGUE: dict[str, EventType] = {t.name: t for t in _TYPES}
