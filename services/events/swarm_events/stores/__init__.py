"""The events service's storage, one module per concept, on SQLite and PostgreSQL.

- `events`: the event log (idempotent intake with the fan-out to subscribed
  webhooks, listings, the arrival-ordered reads live streams follow);
- `webhooks`: subscriptions and their secrets;
- `deliveries`: claiming due deliveries with a lease, redelivery, recovery;
- `attempts`: the delivery log (every attempt and what follows from it);
- `requests`: request ids (AIP-155) of the mutating calls over the shared
  request log, with each call's first answer kept to replay.
"""
