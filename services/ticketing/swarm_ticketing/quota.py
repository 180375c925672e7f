"""Ticket quota: creating a project charges `tickets_per_day` for all of its
tickets at once, through the quota service, before anything is written."""

from __future__ import annotations

import hashlib
import uuid

from swarm.quota.v1 import quota_pb2 as qpb
from swarmcommon.clients import QuotaClient
from swarmcommon.tls import ClientTls

CHARGE_PREFIX = "create-project:"


def charge_request_id(request_id: str | None) -> str:
    """Quota's request id for the charge of one CreateProject.

    Derived from the caller's request_id, so a retried create is charged
    once; hashed, because quota takes at most 128 characters and the caller
    may have used all 128 of theirs (a prefix plus a SHA-256 is 79)."""
    if not request_id:
        return f"{CHARGE_PREFIX}{uuid.uuid4()}"
    return CHARGE_PREFIX + hashlib.sha256(request_id.encode()).hexdigest()


class TicketQuota:
    def __init__(self, target: str, tls: ClientTls | None = None) -> None:
        self.client = QuotaClient(target, tls=tls)

    def charge_tickets(self, tenant_id: str, count: int, request_id: str | None) -> None:
        """Charge `count` tickets or raise QuotaExceeded (nothing charged)."""
        self.client.consume(tenant_id, qpb.RESOURCE_TICKETS_PER_DAY, count, charge_request_id(request_id))

    def close(self) -> None:
        self.client.close()
