"""python -m swarm_telemetry: settings -> server -> serve until SIGTERM.

With SWARM_TELEMETRY_WORKERS=N (N > 1) this process migrates the database once,
then supervises N server processes sharing the listen address; only the
first runs span retention.
"""

from __future__ import annotations

import sys

from swarm_telemetry import server
from swarm_telemetry.config import Settings
from swarmcommon.service import serve


def main() -> int:
    return serve(
        "telemetry",
        Settings(),
        server.start,
        server.migrate,
        # One retention loop is enough (it is safe to run twice).
        worker_env=lambda i: {} if i == 0 else {"SWARM_TELEMETRY_RETENTION_INTERVAL_SECONDS": "0"},
    )


if __name__ == "__main__":
    sys.exit(main())
