"""A real local gRPC server for what a process exports over OTLP (spans,
metrics): the receiving side of OTEL_EXPORTER_OTLP_*_ENDPOINT in tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc


@contextmanager
def otlp_receiver(register: Callable[[grpc.Server], None]) -> Iterator[int]:
    """Serve what `register` adds on a loopback port; yields the port."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)
