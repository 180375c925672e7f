"""A local server speaking the Anthropic Messages API (POST /v1/messages),
for tests and the offline demo: the real `anthropic` SDK is pointed at it
with `base_url` (guests get that URL as configuration, SWARM_LLM_BASE_URL),
and nothing in the product knows the difference.

Replies come from a pluggable function of the request body; each reply
carries a real `usage` block (input tokens estimated from the request text,
output tokens from the reply text, cache tokens as the function says).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    text: str
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


Responder = Callable[[dict[str, Any]], Reply]


def _tokens(text: str) -> int:
    # About four characters a token, never zero for non-empty text.
    return max(1, (len(text) + 3) // 4) if text else 0


def request_text(body: dict[str, Any]) -> str:
    """All the text a Messages request sends (system + every message)."""
    parts: list[str] = []
    system = body.get("system", "")
    parts += [system] if isinstance(system, str) else [b.get("text", "") for b in system]
    for message in body.get("messages", []):
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [b.get("text", "") for b in content if isinstance(b, dict)]
    return "\n".join(parts)


def echo(body: dict[str, Any]) -> Reply:
    return Reply(f"You said: {request_text(body)[-200:]}")


class MessagesServer:
    def __init__(self, responder: Responder = echo, host: str = "127.0.0.1", port: int = 0) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, _error("invalid_request_error", "body is not JSON"))
                    return
                if self.path.rstrip("/") != "/v1/messages":
                    self._send(404, _error("not_found_error", f"no route {self.path}"))
                    return
                if not body.get("model") or not body.get("messages") or not body.get("max_tokens"):
                    self._send(
                        400, _error("invalid_request_error", "model, messages and max_tokens are required")
                    )
                    return
                with server._lock:
                    server.requests.append(body)
                reply = server.responder(body)
                self._send(
                    200,
                    {
                        "id": f"msg_{uuid.uuid4().hex[:24]}",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [{"type": "text", "text": reply.text}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {
                            "input_tokens": _tokens(request_text(body)),
                            "output_tokens": _tokens(reply.text),
                            "cache_creation_input_tokens": reply.cache_creation_input_tokens,
                            "cache_read_input_tokens": reply.cache_read_input_tokens,
                        },
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self._http = ThreadingHTTPServer((host, port), Handler)
        self.base_url = f"http://{host}:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="messages-api", daemon=True)

    def __enter__(self) -> MessagesServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> MessagesServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
