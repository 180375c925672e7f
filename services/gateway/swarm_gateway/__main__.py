"""python -m swarm_gateway: settings -> FastAPI app -> uvicorn."""

from __future__ import annotations

import signal
import sys

import pydantic
import uvicorn

from swarm_gateway.config import Settings
from swarm_gateway.main import create_app
from swarmcommon.logs import configure_logging
from swarmcommon.telemetry import setup_tracing


def _settings() -> Settings:
    """The settings, or exit with what is wrong in them (no traceback to dig through)."""
    try:
        return Settings()
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            name = "SWARM_GATEWAY_" + "_".join(str(part) for part in error["loc"]).upper()
            why = error["msg"].removeprefix("Value error, ")
            print(f"swarm_gateway: refusing to start: {name}: {why}", file=sys.stderr)  # noqa: T201
        sys.exit(2)


def main() -> None:
    settings = _settings()
    configure_logging("gateway", settings.log_level)
    try:
        tls = settings.client_tls()
    except ValueError as exc:
        print(f"swarm_gateway: refusing to start: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    # Its spans go to telemetry over mutual TLS, like its calls.
    setup_tracing("gateway", tls)
    # uvicorn drains on SIGTERM, restores the handler it found, then raises
    # the signal again; this one turns that into a clean exit status.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
