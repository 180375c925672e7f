"""Per-ticket cost caps: a call tagged with a ticket (`x-swarm-ticket-id`)
is checked before it is held against the tenant's budget.

1. Ticketing's AuthorizeTicketSpend: the token's agent must hold the
   ticket's live lease (else the call is refused, 403/404), and it answers
   the ticket's or its project's cap; when neither sets one, the tenant's
   default is quota's RESOURCE_COST_USD_PER_TICKET limit (GetTenant).
2. The ticket's recorded spend (the usage ledger, by ticket id) plus what
   this proxy has admitted for it and not yet settled, plus this call's
   estimate, must fit the cap; otherwise HTTP 429, and the ticket is
   released for review (ticketing's ReleaseForBudget: the agent's lease
   ends, no failure is counted, an operator raises the cap and redrives it).

Calls admitted but not settled are tracked in this process only: proxies
in several processes (SO_REUSEPORT workers) may together overshoot a cap by
one call's estimate each, where the tenant budget (held in quota) cannot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlalchemy as sa

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.ticketing.v1 import ticketing_pb2 as tpb
from swarm_telemetry.tables import usage_records
from swarmcommon.clients import QuotaClient, TicketingClient
from swarmcommon.db import Database
from swarmcommon.tls import ClientTls

U = usage_records
SOURCES = {tpb.COST_CAP_SOURCE_TICKET: "ticket", tpb.COST_CAP_SOURCE_PROJECT: "project"}


@dataclass(frozen=True)
class TicketBudget:
    ticket_id: str
    project_id: str
    # Micro-dollars; None: no cap on the ticket, its project or the tenant.
    cap: int | None
    # Where the cap comes from: "ticket", "project" or "tenant".
    source: str


class TicketGate:
    def __init__(
        self,
        ticketing_target: str,
        quota_target: str,
        db: Database,
        timeout: float = 10.0,
        tls: ClientTls | None = None,
    ) -> None:
        self._ticketing = TicketingClient(ticketing_target, default_timeout=timeout, tls=tls)
        self._quota = QuotaClient(quota_target, default_timeout=timeout, tls=tls) if quota_target else None
        self.db = db
        self._lock = threading.Lock()
        self._admitted: dict[tuple[str, str], int] = {}

    # -- blocking calls (run on the proxy's thread pool) --------------------------------

    def budget(self, tenant_id: str, ticket_id: str, agent_id: str) -> TicketBudget:
        """The ticket's cap, if `agent_id` holds its lease (SwarmError otherwise)."""
        grant = self._ticketing.stub.AuthorizeTicketSpend(
            tpb.AuthorizeTicketSpendRequest(tenant_id=tenant_id, ticket_id=ticket_id, agent_id=agent_id)
        )
        if grant.HasField("cost_cap_usd_micros"):
            return TicketBudget(
                grant.ticket_id, grant.project_id, grant.cost_cap_usd_micros, SOURCES[grant.cost_cap_source]
            )
        return TicketBudget(grant.ticket_id, grant.project_id, self._tenant_default(tenant_id), "tenant")

    def _tenant_default(self, tenant_id: str) -> int | None:
        if self._quota is None:
            return None
        tenant = self._quota.stub.GetTenant(qpb.GetTenantRequest(tenant_id=tenant_id)).tenant
        for limit in tenant.effective_limits:
            if limit.resource == qpb.RESOURCE_COST_USD_PER_TICKET and not limit.unlimited:
                return int(limit.limit)
        return None

    def recorded(self, tenant_id: str, ticket_id: str) -> int:
        """The ticket's settled spend in the usage ledger, micro-dollars."""
        query = sa.select(sa.func.coalesce(sa.func.sum(U.c.cost_usd_micros), 0)).where(
            U.c.tenant_id == tenant_id, U.c.ticket_id == ticket_id
        )
        return int(self.db.transaction(lambda conn: conn.execute(query).scalar_one(), write=False))

    def release(
        self, tenant_id: str, ticket_id: str, agent_id: str, spent: int, cap: int, call_id: str
    ) -> None:
        """Hold the ticket for review (ticketing ends the agent's lease; no failure counted)."""
        self._ticketing.stub.ReleaseForBudget(
            tpb.ReleaseForBudgetRequest(
                tenant_id=tenant_id,
                ticket_id=ticket_id,
                agent_id=agent_id,
                spent_usd_micros=spent,
                cost_cap_usd_micros=cap,
                request_id=f"llm-budget:{call_id}",
            )
        )

    # -- admission (on the event loop; the lock keeps it safe anywhere) -----------------

    def admit(self, tenant_id: str, ticket_id: str, recorded: int, estimate: int, cap: int) -> int | None:
        """Admit `estimate` against the cap: None when admitted, else what is
        spent or admitted already (recorded + in flight here)."""
        key = (tenant_id, ticket_id)
        with self._lock:
            spent = recorded + self._admitted.get(key, 0)
            if spent + estimate > cap:
                return spent
            self._admitted[key] = self._admitted.get(key, 0) + estimate
            return None

    def settled(self, tenant_id: str, ticket_id: str, estimate: int) -> None:
        """An admitted call is over (settled or abandoned): its estimate no longer counts."""
        key = (tenant_id, ticket_id)
        with self._lock:
            left = self._admitted.get(key, 0) - estimate
            if left > 0:
                self._admitted[key] = left
            else:
                self._admitted.pop(key, None)

    def close(self) -> None:
        self._ticketing.close()
        if self._quota is not None:
            self._quota.close()
