"""Quota storage, one module per concept: tenants, API keys, counters,
reservations, request ids."""
