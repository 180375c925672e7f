"""python -m swarm_ticketing: settings -> server -> serve until SIGTERM.

With SWARM_TICKETING_WORKERS=N (N > 1) this process migrates the database
once, then supervises N server processes sharing the listen address; only
the first runs the reaper and the outbox relay.
"""

from __future__ import annotations

import sys

from swarm_ticketing import server
from swarm_ticketing.config import Settings
from swarmcommon.service import serve


def main() -> int:
    return serve(
        "ticketing",
        Settings(),
        server.start,
        server.migrate,
        # One reaper and one outbox relay are enough; both are safe to run twice.
        worker_env=lambda i: (
            {}
            if i == 0
            else {"SWARM_TICKETING_REAPER_INTERVAL_SECONDS": "0", "SWARM_TICKETING_EVENTS_TARGET": ""}
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
