"""`python -m swarm_<service>`: the one way every gRPC service runs.

    settings -> logging -> (N workers: supervise | 1: tracing -> start -> serve
    until SIGTERM -> drain -> close)

A service's __main__ passes its settings and a `start` function returning a
running app with `handle` (the gRPC server), `before_drain()` (stop background
work) and `close()` (release resources once the server stopped).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from swarmcommon.grpcserver import Serving, run_until_signal
from swarmcommon.logs import configure_logging
from swarmcommon.metrics.serving import MetricsPortUnavailable
from swarmcommon.security import InsecureConfig, client_tls
from swarmcommon.settings import ServiceSettings
from swarmcommon.telemetry import setup_tracing, shutdown_tracing
from swarmcommon.tls import TlsConfigError
from swarmcommon.workers import supervise


class RunningService(Protocol):
    @property
    def handle(self) -> Serving: ...

    def before_drain(self) -> None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=ServiceSettings)


def serve(
    name: str,
    settings: S,
    start: Callable[[S], RunningService],
    migrate: Callable[[str], None],
    worker_env: Callable[[int], dict[str, str]] = lambda index: {},
) -> int:
    """Run service `name` (module swarm_<name>) until SIGTERM; returns the exit status."""
    prefix = f"SWARM_{name.upper()}_"
    configure_logging(name, settings.log_level)
    if settings.workers > 1:
        if settings.listen_address.endswith(":0"):
            raise SystemExit(f"{prefix}WORKERS > 1 needs a fixed port in {prefix}LISTEN_ADDRESS")
        if settings.migrate_on_start:
            migrate(settings.database_url)  # once, before the workers race for it
        return supervise(f"swarm_{name}", settings.workers, prefix, extra_env=worker_env)
    try:
        setup_tracing(name, client_tls(settings))
        app = start(settings)
    except (InsecureConfig, TlsConfigError, MetricsPortUnavailable) as exc:
        # No certificates and no explicit dev mode, or the metrics port taken: refuse, saying what to set.
        print(f"swarm_{name}: refusing to start: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        run_until_signal(app.handle, settings.shutdown_grace_seconds, on_stop=[app.before_drain])
    finally:
        app.close()
        shutdown_tracing()
    return 0
