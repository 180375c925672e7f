"""Request ids (AIP-155) of every mutating quota call, over the shared
request log (`swarmcommon.idempotency`).

Claiming FIRST matters most here: claiming after the charge would let a
concurrent duplicate's charge be refused by the first one's usage, and
answer RESOURCE_EXHAUSTED instead of replaying the success.
"""

from __future__ import annotations

from swarm_quota.tables import quota_requests
from swarmcommon.idempotency import RequestLog

REQUEST_LOG = RequestLog(quota_requests, answer="response")
