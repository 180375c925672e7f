"""A local integration endpoint that verifies every delivery like a customer would."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class WebhookReceiver:
    def __init__(self) -> None:
        self.secret = ""
        self.by_type: Counter[str] = Counter()
        self.event_ids: set[str] = set()
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                    receiver.by_type[payload["event"]] += 1
                    receiver.event_ids.add(self.headers["webhook-id"])
                    self.send_response(204)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/swarm-events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
