"""Ticketing wired to a real quota service, for the tests of what creating a
project charges."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.harness import QuotaHarness, TicketingHarness, start_quota, start_ticketing


@pytest.fixture
def charged(db: str) -> Iterator[tuple[QuotaHarness, TicketingHarness]]:
    """Quota and ticketing on the same database (their tables do not overlap),
    ticketing charging tickets_per_day in quota."""
    quota = start_quota(db, dev_mode=True)
    try:
        ticketing = start_ticketing(db, quota_target=quota.target)
        try:
            yield quota, ticketing
        finally:
            ticketing.stop()
    finally:
        quota.stop()
