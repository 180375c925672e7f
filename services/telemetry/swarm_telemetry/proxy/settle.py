"""Settlement: a finished call priced from the provider's usage with the
ledger's published prices, its quota hold settled to that cost, and its row
written to the usage ledger, each step idempotent by the call id, so a
retry after any failure neither loses nor doubles anything.

Order, as in UsageLedger.record: quota first, then the row. A row is the
proof the call was fully accounted; quota's Release charges only once (by
the reservation's state), so retrying the whole settlement is safe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from swarm_telemetry.domain import RequestType, Tokens, UsageRecord, UsageRequest, replay
from swarm_telemetry.ledger import UsageLedger
from swarm_telemetry.proxy.budget import CostHolds
from swarmcommon import metrics
from swarmcommon.errors import Unavailable

log = logging.getLogger(__name__)
PROVIDER = "anthropic"


@dataclass(frozen=True)
class Call:
    """One proxied call: who made it (from the token), what for, and its id."""

    id: str
    tenant_id: str
    agent_id: str
    role: str
    project_id: str
    ticket_id: str
    model: str
    started_at: datetime

    def usage(self, tokens: Tokens) -> UsageRequest:
        try:
            kind = RequestType(self.role)
        except ValueError:
            kind = RequestType.OTHER
        return UsageRequest(
            request_id=self.id,
            tenant_id=self.tenant_id,
            project_id=self.project_id,
            ticket_id=self.ticket_id,
            agent_id=self.agent_id,
            request_type=kind,
            provider=PROVIDER,
            model=self.model,
            tokens=tokens,
            # The month the estimate was held in is the month it is billed to.
            usage_at=self.started_at,
        )


class Settler:
    def __init__(self, ledger: UsageLedger, holds: CostHolds | None) -> None:
        self.ledger = ledger
        self.holds = holds

    def settle(self, call: Call, reservation_id: str | None, tokens: Tokens | None) -> UsageRecord | None:
        """Settle `call`: `tokens` None means the provider billed nothing
        (an error before any output); the hold is then simply given back."""
        if tokens is None:
            if self.holds is not None and reservation_id is not None:
                self.holds.settle(call.tenant_id, reservation_id, 0, call.id)
            return None
        request = call.usage(tokens)
        first = self.ledger.store.find(call.tenant_id, call.id)
        if first is not None:
            return replay(first, request)
        record = self.ledger.price(request)
        if self.holds is not None and reservation_id is not None:
            self.holds.settle(call.tenant_id, reservation_id, record.cost_usd_micros, call.id)
        if self.ledger.store.insert(record):
            metrics.llm_usage(call.model, not record.unknown_model, record.cost_usd_micros, vars(tokens))
            log.info(
                "llm call settled",
                extra={"request_id": call.id, "tenant_id": call.tenant_id, "cost": record.cost_usd_micros},
            )
            return record
        winner = self.ledger.store.find(call.tenant_id, call.id)
        if winner is None:
            raise Unavailable(f"usage record {call.id!r} conflicted with one not visible yet; retry")
        return replay(winner, request)
