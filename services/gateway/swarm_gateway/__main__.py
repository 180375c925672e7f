"""python -m swarm_gateway: settings -> FastAPI app -> uvicorn."""

from __future__ import annotations

import signal
import sys

import uvicorn

from swarm_gateway.config import Settings
from swarm_gateway.main import create_app
from swarmcommon.logs import configure_logging
from swarmcommon.telemetry import setup_tracing


def main() -> None:
    settings = Settings()
    configure_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    # uvicorn drains on SIGTERM, restores the handler it found, then raises
    # the signal again; this one turns that into a clean exit status.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
