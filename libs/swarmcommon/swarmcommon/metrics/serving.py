"""Serving a service's series: GET /metrics over plain HTTP on its own port.

    server = MetricsServer.start("ticketing", host="127.0.0.1", port=0)
    server.port     # the bound port (0 asks for an ephemeral one)
    server.stop()

swarmcommon.grpcserver starts one beside every gRPC server (the setting
`metrics_port`, on the host the gRPC server listens on) and stops it with
the server. What it serves: the service's registry (swarmcommon.metrics),
this server's own collectors (gauges read at scrape time, such as vmhost's
agents by state) and the process's CPU, memory, file descriptors and GC.

Plain HTTP, as Prometheus scrapes: the series carry counts by fixed
labels, nothing of a tenant; who may reach the port is the network
policy's business.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.registry import Collector, CollectorRegistry

from swarmcommon.metrics import REGISTRIES


def scrape_registry(services: Iterable[str], collectors: Sequence[Collector] = ()) -> CollectorRegistry:
    """What one /metrics answers: the named services' series, `collectors`,
    and this process's own."""
    registry = CollectorRegistry()
    for name in dict.fromkeys(services):
        if name in REGISTRIES:
            registry.register(REGISTRIES[name])
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body and Content-Type of a scrape of `registry` (text format 0.0.4)."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def listen_host(listen_address: str) -> str:
    """The host of a gRPC listen address ("0.0.0.0:50051", "[::]:50051",
    "localhost:0"), for the metrics server to bind the same one."""
    host = listen_address.rpartition(":")[0].strip("[]")
    return host or "0.0.0.0"


class MetricsPortUnavailable(RuntimeError):
    """The metrics port cannot be bound (taken, or not this host's)."""


# How often the serving loop looks for a stop: stop() waits up to this long
# (socketserver's default, 0.5 s, made every service's stop half a second slower).
POLL_SECONDS = 0.05


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not worth a log line each."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _serve(host: str, port: int, registry: CollectorRegistry) -> tuple[Any, threading.Thread]:
    server_class = _Server6 if ":" in host else _Server
    httpd = make_server(host, port, make_wsgi_app(registry), server_class, handler_class=_Quiet)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, name="metrics", daemon=True
    )
    thread.start()
    return httpd, thread


class MetricsServer:
    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.port: int = int(httpd.server_port)
        self._stopped = threading.Event()

    @classmethod
    def start(
        cls, services: Iterable[str], *, host: str, port: int, collectors: Sequence[Collector] = ()
    ) -> MetricsServer:
        registry = scrape_registry(services, collectors)
        try:
            httpd, thread = _serve(host, port, registry)
        except OSError as exc:
            raise MetricsPortUnavailable(
                f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc} "
                "(choose another port with SWARM_<SERVICE>_METRICS_PORT; 0 picks a free one)"
            ) from exc
        return cls(httpd, thread)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
