"""A live events server per test, on the parametrized backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from swarm.events.v1 import events_pb2_grpc as pb_grpc
from swarm_events import server as events_server
from swarm_events.config import Settings as EventsSettings
from swarmcommon.grpcclient import channel
from tests.events.helpers import Live


@pytest.fixture
def live(db: str) -> Iterator[Live]:
    app = events_server.start(
        EventsSettings(
            database_url=db,
            listen_address="127.0.0.1:0",
            webhook_allow_networks="127.0.0.0/8",
            retry_schedule_seconds="0.05,0.05,0.05,0.05,0.05,0.05",
            delivery_timeout_seconds=0.5,
            disable_after_seconds=1.0,
            dispatcher_poll_seconds=0.02,
        )
    )
    ch = channel(f"127.0.0.1:{app.port}")
    yield Live(app, pb_grpc.EventsServiceStub(ch))
    ch.close()
    app.stop(grace=1)
