"""A stand-in for the provider behind the LLM proxy: speaks the Messages
API (JSON and server-sent events) and count_tokens, records every request
with its headers, and reports the usage it is told to, including cache
writes and reads. Input tokens are counted the way swarmdemo's server
counts them (about four characters a token of the request's text)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from swarmdemo.messages_server import request_text


def text_tokens(body: dict[str, Any]) -> int:
    text = request_text(body)
    return max(1, (len(text) + 3) // 4) if text else 0


@dataclass
class Behaviour:
    """What the next answers look like (the test changes it between calls)."""

    reply: str = "Done."
    output_tokens: int = 120
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    delay_seconds: float = 0.0
    # Answer with this status and an error body instead (e.g. 529 overloaded).
    fail_status: int = 0
    # Streams wait on this between the first delta and the rest.
    gate: threading.Event = field(default_factory=threading.Event)
    gated: bool = False


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Upstream:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.seen: list[Seen] = []
        self.finished: list[str] = []  # message ids whose answer was fully written
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with upstream._lock:
                    upstream.seen.append(
                        Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                b = upstream.behaviour
                if self.path.startswith("/v1/messages/count_tokens"):
                    self._json(200, {"input_tokens": text_tokens(body)})
                    return
                if b.fail_status:
                    error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
                    self._json(b.fail_status, error)
                    return
                time.sleep(b.delay_seconds)
                message_id = f"msg_{uuid.uuid4().hex[:24]}"
                if body.get("stream"):
                    self._stream(message_id, body, b)
                else:
                    self._json(200, _message(message_id, body, b))
                with upstream._lock:
                    upstream.finished.append(message_id)

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, message_id: str, body: dict[str, Any], b: Behaviour) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                start = _message(message_id, body, b) | {"content": [], "stop_reason": None}
                start["usage"] = {**start["usage"], "output_tokens": 1}
                half = len(b.reply) // 2
                events: list[tuple[str, dict[str, Any]]] = [
                    ("message_start", {"type": "message_start", "message": start}),
                    ("content_block_start", _block_start()),
                    ("ping", {"type": "ping"}),
                    ("content_block_delta", _delta(b.reply[:half])),
                ]
                for name, data in events:
                    self._chunk(_event(name, data))
                if b.gated:
                    b.gate.wait(30)
                rest: list[tuple[str, dict[str, Any]]] = [
                    ("content_block_delta", _delta(b.reply[half:])),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    (
                        "message_delta",
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"output_tokens": b.output_tokens},
                        },
                    ),
                    ("message_stop", {"type": "message_stop"}),
                ]
                try:
                    for name, data in rest:
                        self._chunk(_event(name, data))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    return

            def log_message(self, *args: object) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="test-upstream", daemon=True)
        self._thread.start()

    def messages(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == "/v1/messages"]

    def close(self) -> None:
        self.behaviour.gate.set()
        self._http.shutdown()
        self._http.server_close()


def _message(message_id: str, body: dict[str, Any], b: Behaviour) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": b.reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": text_tokens(body),
            "output_tokens": b.output_tokens,
            "cache_creation_input_tokens": b.cache_creation_input_tokens,
            "cache_read_input_tokens": b.cache_read_input_tokens,
        },
    }


def _block_start() -> dict[str, Any]:
    return {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}


def _delta(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
