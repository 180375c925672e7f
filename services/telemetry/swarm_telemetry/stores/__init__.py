"""Telemetry storage, one module per concept: spans, the usage ledger."""
