"""The LLM cost ledger's operations: record a call once (priced from the
versioned table and charged to the tenant's budget), summaries, budget checks."""

from __future__ import annotations

import uuid

from swarm_telemetry.domain import (
    Budget,
    Budgets,
    SummaryQuery,
    Totals,
    UsageRecord,
    UsageRequest,
    UsageSummary,
    budget,
    quota_request_id,
    replay,
)
from swarm_telemetry.prices import PRICE_VERSION, cost_usd_micros, price_of
from swarm_telemetry.stores.usage import UsageStore
from swarmcommon import metrics
from swarmcommon.clock import Clock
from swarmcommon.errors import Unavailable


class UsageLedger:
    def __init__(self, store: UsageStore, clock: Clock, budgets: Budgets | None) -> None:
        self.store = store
        self.clock = clock
        self.budgets = budgets

    def price(self, u: UsageRequest) -> UsageRecord:
        """The call as a ledger row; a model missing from the price table
        costs 0 and is flagged, never priced by a guess."""
        price = price_of(u.provider, u.model)
        t = u.tokens
        cost = (
            cost_usd_micros(
                price,
                t.input_tokens,
                t.output_tokens,
                t.cache_creation_input_tokens,
                t.cache_read_input_tokens,
            )
            if price
            else 0
        )
        return UsageRecord(
            id=str(uuid.uuid4()),
            request_id=u.request_id,
            tenant_id=u.tenant_id,
            project_id=u.project_id,
            ticket_id=u.ticket_id,
            agent_id=u.agent_id,
            request_type=u.request_type,
            provider=u.provider,
            model=u.model,
            tokens=u.tokens,
            cost_usd_micros=cost,
            price_version=PRICE_VERSION,
            unknown_model=price is None,
            usage_at=u.usage_at or self.clock.now(),
        )

    def record(self, u: UsageRequest) -> UsageRecord:
        """Price and store one call. A retry (same request_id, same call)
        returns the first record and charges nothing again; a request_id
        reused for another call is INVALID_ARGUMENT."""
        first = self.store.find(u.tenant_id, u.request_id)
        if first is not None:
            return replay(first, u)
        record = self.price(u)
        if self.budgets is not None and record.cost_usd_micros > 0:
            # Before the row: if quota cannot be reached the caller retries
            # with the same request_id, and quota counts it once.
            self.budgets.charge(u.tenant_id, record.cost_usd_micros, quota_request_id(u.request_id))
        if self.store.insert(record):
            metrics.llm_usage(
                record.model, not record.unknown_model, record.cost_usd_micros, vars(record.tokens)
            )
            return record
        winner = self.store.find(u.tenant_id, u.request_id)  # a concurrent call stored it first
        if winner is None:
            raise Unavailable(f"usage record {u.request_id!r} conflicted with one not visible yet; retry")
        return replay(winner, u)

    def ticket_totals(self, tenant_id: str, ticket_id: str) -> Totals:
        return self.store.ticket_totals(tenant_id, ticket_id)

    def summary(self, q: SummaryQuery) -> UsageSummary:
        return self.store.summary(q)

    def check_budget(self, tenant_id: str, estimated_cost_usd_micros: int) -> Budget:
        now = self.clock.now()
        spent = self.store.month_spend(tenant_id, now)
        limit = self.budgets.limit(tenant_id) if self.budgets is not None else None
        return budget(spent, limit, estimated_cost_usd_micros, now)
