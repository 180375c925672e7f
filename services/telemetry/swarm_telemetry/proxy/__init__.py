"""The LLM proxy: an Anthropic Messages API endpoint (POST /v1/messages,
streaming or not, and count_tokens) that guests call with their agent token
as the API key. It holds the provider key, so guests never do, and it
enforces the tenant's monthly cost budget, so they cannot bypass it.

Per call:
1. authenticate the agent token (tenant and agent come from it);
2. estimate the cost (`estimate.py`); a call tagged with a ticket must
   come from the agent holding its lease and fit the ticket's cost cap
   (`tickets.py`: else 429 and the ticket is released for review); then
   RESERVE the estimate in quota
   (COST_USD_MONTH): the admission check is quota's one atomic upsert, so
   concurrent calls cannot all squeeze under the same remaining budget; a
   reservation that does not fit is HTTP 429 and the upstream sees nothing;
3. forward with the platform key, passing the answer (or the SSE stream)
   through unchanged while reading its `usage` (`usage.py`);
4. settle (`settle.py`): one quota Release that gives the estimate back and
   charges the actual cost, then the ledger row, both idempotent by the
   request id the proxy made. This runs in the proxy whatever happens to the
   guest: a guest that hangs up mid-stream or dies after the answer loses no
   usage record (the proxy reads the upstream to its end and settles).

It is served beside telemetry (same process) because settlement writes the
same usage ledger RecordUsage writes, through the same pricing code.
"""
