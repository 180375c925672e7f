"""python -m swarm_telemetry: settings -> server -> serve until SIGTERM.

With SWARM_TELEMETRY_WORKERS=N (N > 1) this process migrates the database once,
then supervises N server processes sharing the listen address.
"""

from __future__ import annotations

import sys

from swarm_telemetry import server
from swarm_telemetry.config import Settings
from swarmcommon.service import serve


def main() -> int:
    return serve("telemetry", Settings(), server.start, server.migrate)


if __name__ == "__main__":
    sys.exit(main())
