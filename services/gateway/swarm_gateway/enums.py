"""The backends' enums as the REST API spells them (lower-case suffixes:
`TICKET_STATE_IN_PROGRESS` is "in_progress"), through the shared codec."""

from __future__ import annotations

from swarm.events.v1 import events_pb2 as epb
from swarm.quota.v1 import quota_pb2 as qpb
from swarm.telemetry.v1 import telemetry_pb2 as tpb
from swarm.ticketing.v1 import ticketing_pb2 as kpb
from swarmcommon.enums import ProtoNames

TICKET_TYPE = ProtoNames(kpb.TicketType)
TICKET_STATE = ProtoNames(kpb.TicketState)
AGENT_ROLE = ProtoNames(kpb.AgentRole)
COLLABORATION_PATTERN = ProtoNames(kpb.CollaborationPattern)
MERGE_REQUEST_STATE = ProtoNames(kpb.MergeRequestState)
QUARANTINE_CAUSE = ProtoNames(kpb.QuarantineCause)
PLAN = ProtoNames(qpb.Plan)
RESOURCE = ProtoNames(qpb.Resource)
WEBHOOK_STATE = ProtoNames(epb.WebhookState)
ATTEMPT_OUTCOME = ProtoNames(epb.AttemptOutcome)
DELIVERY_STATE = ProtoNames(epb.DeliveryState)
SPAN_KIND = ProtoNames(tpb.SpanKind)
SPAN_STATUS = ProtoNames(tpb.SpanStatus)
USAGE_GROUP_BY = ProtoNames(tpb.UsageGroupBy)
