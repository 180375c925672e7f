"""python -m swarm_quota: settings -> server -> serve until SIGTERM.

With SWARM_QUOTA_WORKERS=N (N > 1) this process migrates the database
once, then supervises N server processes sharing the listen address.
"""

from __future__ import annotations

import sys

from swarm_quota import server
from swarm_quota.config import Settings
from swarmcommon.grpcserver import run_until_signal
from swarmcommon.logs import configure_logging
from swarmcommon.telemetry import setup_tracing, shutdown_tracing
from swarmcommon.workers import supervise


def main() -> int:
    settings = Settings()
    configure_logging("quota", settings.log_level)
    if settings.workers > 1:
        if settings.listen_address.endswith(":0"):
            raise SystemExit("SWARM_QUOTA_WORKERS > 1 needs a fixed port in SWARM_QUOTA_LISTEN_ADDRESS")
        if settings.migrate_on_start:
            server.migrate(settings.database_url)
        return supervise(
            "swarm_quota",
            settings.workers,
            "SWARM_QUOTA_",
        )
    setup_tracing("quota")
    app = server.start(settings)
    try:
        run_until_signal(app.handle, settings.shutdown_grace_seconds, on_stop=[])
    finally:
        app.db.dispose()
        shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
