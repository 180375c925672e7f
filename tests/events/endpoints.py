"""Webhook endpoints that misbehave on purpose, and a receiver that times arrivals.

Each is a real HTTP server on 127.0.0.1 speaking raw sockets, so it can do
what a well-behaved framework would not: trickle a body one byte at a time,
or answer with a body far larger than anyone should read.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _read_request(conn: socket.socket) -> bytes:
    """Headers and body of one request (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


class _RawServer:
    """Accepts connections on a thread and hands each to `handle` on its own thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/swarm"
        self.stopping = threading.Event()
        self.connections = 0
        # Connections open right now, and the most ever open at once.
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            with self.lock:
                self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            with conn:
                self.handle(conn)
        except OSError:
            return  # the client hung up: that is what these servers provoke
        finally:
            with self.lock:
                self.active -= 1

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopping.set()
        try:  # wakes the accept() in progress (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._accepter.join(timeout=5)
        with self.lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)


class TricklingEndpoint(_RawServer):
    """Answers 200 with headers at once, then one byte of body every `interval`
    seconds, forever (no Content-Length: the body ends when the connection does)."""

    def __init__(self, interval: float = 0.4) -> None:
        self.interval = interval
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        while not self.stopping.is_set():
            readable, _, _ = select.select([conn], [], [], self.interval)
            if readable and not conn.recv(1024):
                return  # the client hung up: this connection no longer holds anyone
            if not readable:
                conn.sendall(b".")


class HeaderTricklingEndpoint(_RawServer):
    """Sends its status line and headers one byte every `interval` seconds, forever."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        _read_request(conn)
        for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 1_000_000:
            if self.stopping.wait(self.interval):
                return
            conn.sendall(bytes([byte]))


class SilentEndpoint(_RawServer):
    """Reads the request and never answers."""

    def handle(self, conn: socket.socket) -> None:
        _read_request(conn)
        self.stopping.wait()


class KeepAliveEndpoint(_RawServer):
    """HTTP/1.1 with keep-alive: answers every request on a connection with
    200 and a body naming the connection and the request's place on it.

    `after_first` is what it does on a connection once it has answered its
    first request: "serve" (keep serving), "drop" (close it without a word,
    as an endpoint's idle timeout does), "inject" (at once send a second,
    unasked-for answer, then keep the connection open: a hostile endpoint
    trying to have its words read as the answer to the next delivery) or
    "inject_later" (the same a moment later, while the connection idles)."""

    def __init__(self, after_first: str = "serve", close_header: bool = False) -> None:
        self.after_first = after_first
        self.close_header = close_header
        self.requests = 0
        self.injected = threading.Event()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            number = self.connections
        served = 0
        while not self.stopping.is_set():
            if not _read_request(conn):
                return
            served += 1
            with self.lock:
                self.requests += 1
            conn.sendall(_answer(f"conn-{number}-req-{served}", close=self.close_header))
            if self.close_header or (served == 1 and self.after_first == "drop"):
                return
            if served == 1 and self.after_first.startswith("inject"):
                if self.after_first == "inject_later" and self.stopping.wait(0.1):
                    return
                conn.sendall(_answer("INJECTED", close=False))
                self.injected.set()


def _answer(body: str, close: bool) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n" + body).encode()


@contextmanager
def keep_alive_endpoint(
    after_first: str = "serve", close_header: bool = False
) -> Iterator[KeepAliveEndpoint]:
    server = KeepAliveEndpoint(after_first, close_header)
    try:
        yield server
    finally:
        server.close()


@dataclass
class HugeBody:
    """What a HugeBodyEndpoint managed to send on one connection."""

    sent: int = 0
    finished: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class HugeBodyEndpoint(_RawServer):
    """Answers 200 with a `size`-byte body, written as fast as the client reads it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.responses: list[HugeBody] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        # A small send buffer, so what the client does not read stays here
        # rather than piling up in the kernel.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        _read_request(conn)
        record = HugeBody()
        with self.lock:
            self.responses.append(record)
        chunk = b"x" * 65536
        try:
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n\r\n".encode())
            while record.sent < self.size and not self.stopping.is_set():
                piece = chunk[: self.size - record.sent]
                conn.sendall(piece)
                record.sent += len(piece)
            record.finished = record.sent >= self.size
        finally:
            record.done.set()


@contextmanager
def trickling_endpoint(interval: float = 0.4) -> Iterator[TricklingEndpoint]:
    server = TricklingEndpoint(interval)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def header_trickling_endpoint(interval: float = 0.1) -> Iterator[HeaderTricklingEndpoint]:
    server = HeaderTricklingEndpoint(interval)
    try:
        yield server
    finally:
        server.close()


@contextmanager
def silent_endpoint() -> Iterator[SilentEndpoint]:
    server = SilentEndpoint()
    try:
        yield server
    finally:
        server.close()


@contextmanager
def huge_body_endpoint(size: int) -> Iterator[HugeBodyEndpoint]:
    server = HugeBodyEndpoint(size)
    try:
        yield server
    finally:
        server.close()


@dataclass
class TimedReceiver:
    """A healthy endpoint: answers 204 at once and notes when each webhook-id arrived."""

    url: str = ""
    arrivals: dict[str, float] = field(default_factory=dict)


@contextmanager
def timed_receiver() -> Iterator[TimedReceiver]:
    rec = TimedReceiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                rec.arrivals.setdefault(self.headers["webhook-id"], time.monotonic())
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/healthy"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
