"""A live events server per test, on the parametrized backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.events.helpers import Live, start_live


@pytest.fixture
def live(db: str) -> Iterator[Live]:
    app = start_live(
        db,
        retry_schedule_seconds="0.05,0.05,0.05,0.05,0.05,0.05",
        retry_jitter=0.2,
        delivery_timeout_seconds=0.5,
        disable_after_seconds=1.0,
    )
    yield app
    app.stop()
