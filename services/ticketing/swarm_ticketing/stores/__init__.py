"""Ticketing's storage, one module per concept, on SQLite and PostgreSQL.

- `projects`: creating a project (validated, charged, stored with its
  tickets) and reading projects;
- `tickets`: reading tickets and their audit trail;
- `dead_letters`: the dead-letter queue and redrive;
- `claims`: the claim, the hot path; `leases`: every token-guarded
  transition after it; `lost`: leases lost without their holder (a vanished
  agent, the reaper's pass); `failures`: failure accounting shared by every
  path that loses a lease;
- `merge_requests`: merge requests kept in step with the stages;
- `journal`: the audit row and outbox event every transition writes;
- `requests`: request ids (AIP-155) of the mutating calls;
- `rows`: rows to domain objects;
  `statements`: the hot paths' pre-built statements.

Every write is one transaction that also writes its audit rows, outbox
events and request-id record.
"""
