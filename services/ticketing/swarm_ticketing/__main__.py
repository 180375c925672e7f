"""python -m swarm_ticketing: settings -> server -> serve until SIGTERM."""

from __future__ import annotations

from swarm_ticketing import server
from swarm_ticketing.config import Settings
from swarmcommon.grpcserver import run_until_signal
from swarmcommon.logs import configure_logging
from swarmcommon.telemetry import setup_tracing, shutdown_tracing


def main() -> None:
    settings = Settings()
    configure_logging("ticketing", settings.log_level)
    setup_tracing("ticketing")
    app = server.start(settings)
    try:
        run_until_signal(app.handle, settings.shutdown_grace_seconds, on_stop=[app.reaper.stop])
    finally:
        app.db.dispose()
        shutdown_tracing()


if __name__ == "__main__":
    main()
