"""A real local HTTP endpoint for webhook deliveries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.waiting import eventually


@dataclass
class Receiver:
    """A real HTTP endpoint; `script` holds (status, headers, delay) answers, the last repeats."""

    script: list[tuple[int, dict[str, str], float]] = field(default_factory=lambda: [(200, {}, 0.0)])
    received: list[tuple[dict[str, str], str]] = field(default_factory=list)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 15) -> None:
        eventually(lambda: len(self.received) >= count, timeout, what=f"{count} deliveries")

    def bodies_with(self, fragment: str) -> list[str]:
        return [body for _, body in list(self.received) if fragment in body]


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    rec = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            with lock:
                rec.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, delay = rec.script[min(len(rec.received) - 1, len(rec.script) - 1)]
            time.sleep(delay)
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(b'{"ok": true}')
            except (BrokenPipeError, ConnectionResetError):
                return  # the dispatcher gave up waiting (a timeout test)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/swarm"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
