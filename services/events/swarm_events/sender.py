"""Sending one webhook request, bounded in every dimension an endpoint controls.

- Pinned: the host is resolved and checked by the SSRF guard, and the
  connection goes to that very address (the Host header and TLS name stay
  the URL's).
- Signed: Standard Webhooks headers plus X-Swarm-Signature, with every
  secret in use now.
- A TOTAL deadline per attempt: resolving, connecting, the TLS handshake,
  sending and reading the answer all come out of one budget. (httpx's
  timeouts are per read: an endpoint trickling a byte every few seconds
  held a worker for ever.) Every socket operation waits only for what is
  left of the budget.
- A capped read: at most `read_cap` bytes of the answer are ever read off
  the socket; the log keeps the first `log_cap` of the body. A multi-GB
  answer costs 64 KiB.
- Per-endpoint concurrency: `slots` lets the dispatcher hold at most its
  share of workers on one endpoint, so a slow one cannot take them all.
  Test sends have their own slots (one in flight per endpoint).

HTTP/1.1 is spoken with h11 over a plain socket so that every wait is ours
to bound. A connection whose exchange ended cleanly is kept for the
endpoint's next request (`swarm_events.pool`); one the endpoint dropped
while it was idle is replaced once, when no byte of an answer had come.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import h11

from swarm_events.domain import Outcome, Signing, webhook_body
from swarm_events.pool import Endpoint, KeepAlivePool, endpoint_of
from swarm_events.signing import secrets_in_use, signature_headers
from swarm_events.ssrf import Network, Pinned, Resolver, pin, system_resolver
from swarmcommon.clock import Clock
from swarmcommon.errors import InvalidArgument

READ_CAP = 64 * 1024
LOG_CAP = 20 * 1024
CHUNK = 16 * 1024
USER_AGENT = "Swarm-Webhooks/1"


class DeadlineExceeded(Exception):
    """The attempt's total time budget ran out."""


class Aborted(Exception):
    """The sender is closing."""


class EndpointSlots:
    """At most `per_endpoint` requests in flight to one endpoint at a time."""

    def __init__(self, per_endpoint: int) -> None:
        if per_endpoint < 1:
            raise ValueError(f"per_endpoint must be at least 1 (got {per_endpoint})")
        self.per_endpoint = per_endpoint
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def try_take(self, endpoint: str) -> bool:
        with self._lock:
            if self._held[endpoint] >= self.per_endpoint:
                return False
            self._held[endpoint] += 1
            return True

    def give_back(self, endpoint: str) -> None:
        with self._lock:
            self._held[endpoint] -= 1
            if self._held[endpoint] <= 0:
                del self._held[endpoint]

    def full(self) -> set[str]:
        """Endpoints with no slot left."""
        with self._lock:
            return {e for e, n in self._held.items() if n >= self.per_endpoint}

    def held(self, endpoint: str) -> int:
        with self._lock:
            return self._held[endpoint]

    @contextmanager
    def taken(self, endpoint: str) -> Iterator[bool]:
        """Whether a slot was free; if so it is held inside the block."""
        took = self.try_take(endpoint)
        try:
            yield took
        finally:
            if took:
                self.give_back(endpoint)


@dataclass(frozen=True)
class Message:
    """One event on its way to one URL."""

    url: str
    signing: Signing
    event_id: str
    event_type: str
    created_at: datetime
    data: Any


@dataclass
class _Response:
    status: int | None = None
    retry_after: str | None = None
    body: bytearray = field(default_factory=bytearray)
    read: int = 0
    cut: bool = False


class Sender:
    def __init__(
        self,
        clock: Clock,
        allowed: Sequence[Network],
        deadline: float,
        *,
        per_endpoint: int = 2,
        read_cap: int = READ_CAP,
        log_cap: int = LOG_CAP,
        resolver: Resolver | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.clock = clock
        self.allowed = list(allowed)
        self.deadline = deadline
        self.read_cap = read_cap
        self.log_cap = log_cap
        self.resolver = resolver or system_resolver
        self.tls = tls or ssl.create_default_context()
        self.slots = EndpointSlots(per_endpoint)
        self.pool = KeepAlivePool(per_endpoint)
        self.test_slots = EndpointSlots(1)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def send(self, message: Message) -> Outcome:
        """POST one event, signed with every secret in use now."""
        body = json.dumps(
            webhook_body(message.event_type, message.created_at, message.data), separators=(",", ":")
        )
        now = self.clock.now()
        signing = message.signing
        in_use = secrets_in_use(signing.secret, signing.previous_secret, signing.previous_expires_at, now)
        headers = signature_headers(message.event_id, message.event_type, now, body, in_use)
        return self.post(message.url, body.encode(), headers)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """One request within the total deadline; never raises."""
        started = time.monotonic()
        deadline = started + self.deadline
        response = _Response()
        error: str | None = None
        timed_out = aborted = False
        try:
            target = pin(url, self.allowed, self._bounded_resolver(deadline))
            self._exchange(target, body, headers, deadline, response)
        except InvalidArgument as exc:
            error = f"blocked: {exc.message}"
        except (DeadlineExceeded, TimeoutError):
            timed_out = True
            response.cut = response.status is not None  # the body is whatever came in time
            error = self._timeout_message(response)
        except Aborted:
            aborted, error = True, "aborted: the events service is stopping"
        except h11.ProtocolError as exc:
            error = f"ProtocolError: the endpoint's answer is not valid HTTP/1.1 ({exc})"
        except ssl.SSLError as exc:
            error = f"TLSError: {exc}"
        except OSError as exc:
            error = (
                "aborted: the events service is stopping"
                if self._closing.is_set()
                else f"ConnectError: {exc}"
            )
            aborted = self._closing.is_set()
        except Exception as exc:  # whatever an endpoint answers is logged, never breaks the dispatcher
            error = f"{type(exc).__name__}: {exc}"
        return self._outcome(response, error, timed_out, aborted, started)

    def close(self) -> None:
        """Abandon every request in flight (shutdown): their sockets are shut now."""
        self._closing.set()
        self.pool.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- the exchange --------------------------------------------------------------------------

    def _timeout_message(self, response: _Response) -> str:
        if response.status is None:
            return f"Timeout: no complete answer within {self.deadline:g}s"
        return f"Timeout: the response body was still arriving after {self.deadline:g}s; stopped reading"

    def _outcome(
        self, response: _Response, error: str | None, timed_out: bool, aborted: bool, started: float
    ) -> Outcome:
        body = bytes(response.body[: self.log_cap])
        return Outcome(
            status_code=response.status,
            body=body.decode("utf-8", errors="replace"),
            truncated=response.cut or len(response.body) > self.log_cap,
            error=error,
            retry_after=response.retry_after,
            duration_ms=int((time.monotonic() - started) * 1000),
            timed_out=timed_out,
            aborted=aborted,
            bytes_read=response.read,
        )

    def _exchange(
        self, target: Pinned, body: bytes, headers: dict[str, str], deadline: float, response: _Response
    ) -> None:
        endpoint = endpoint_of(target)
        kept = self.pool.take(endpoint)
        if kept is not None:
            try:
                self._over(kept, endpoint, target, body, headers, deadline, response)
                return
            except (ConnectionError, h11.RemoteProtocolError):
                # The endpoint dropped the kept connection before answering
                # (its idle timeout raced our request): once more, on a new one.
                if response.read or self._closing.is_set():
                    raise
        self._over(
            self._open_connection(target, deadline), endpoint, target, body, headers, deadline, response
        )

    def _over(
        self,
        sock: socket.socket,
        endpoint: Endpoint,
        target: Pinned,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
        response: _Response,
    ) -> None:
        """One request on `sock`; the connection is kept for the endpoint's
        next request if the exchange ended cleanly, else closed."""
        keep = False
        with self._lock:
            self._open.add(sock)
        try:
            conn = h11.Connection(our_role=h11.CLIENT)
            request = h11.Request(
                method="POST", target=target.target, headers=_request_headers(target, body, headers)
            )
            sock.settimeout(_left(deadline))
            sock.sendall(conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            self._read(sock, conn, deadline, response)
            keep = (
                conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and not response.cut
                and not conn.trailing_data[0]  # bytes after the answer: nobody asked for them
            )
        finally:
            with self._lock:
                self._open.discard(sock)
            if keep and not self._closing.is_set():
                self.pool.give(endpoint, sock)
            else:
                sock.close()

    def _read(self, sock: socket.socket, conn: h11.Connection, deadline: float, response: _Response) -> None:
        """Read the answer until it ends, the cap is reached, or the deadline passes."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if response.read >= self.read_cap:
                    response.cut = True
                    return
                sock.settimeout(_left(deadline))
                chunk = sock.recv(min(CHUNK, self.read_cap - response.read))
                if self._closing.is_set():
                    raise Aborted()
                response.read += len(chunk)
                conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                response.status = event.status_code
                response.retry_after = _header(event.headers, b"retry-after")
            elif isinstance(event, h11.Data):
                response.body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    def _open_connection(self, target: Pinned, deadline: float) -> socket.socket:
        if self._closing.is_set():
            raise Aborted()
        sock = socket.create_connection((target.address, target.port), timeout=_left(deadline))
        if target.scheme != "https":
            return sock
        with self._lock:  # a handshake stalled by the endpoint is cut at shutdown too
            self._open.add(sock)
        try:
            sock.settimeout(_left(deadline))
            return self.tls.wrap_socket(sock, server_hostname=target.sni_hostname)
        except BaseException:
            sock.close()
            raise
        finally:
            with self._lock:
                self._open.discard(sock)

    def _bounded_resolver(self, deadline: float) -> Resolver:
        """The resolver, given only what is left of the deadline.

        getaddrinfo cannot be interrupted: a lookup that outlives the budget
        is left to finish on its own thread (the system resolver's own
        timeouts end it) while the attempt fails now."""

        def resolve(host: str, port: int) -> list[str]:
            if _is_address(host):
                return self.resolver(host, port)
            result: list[list[str]] = []
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    result.append(self.resolver(host, port))
                except BaseException as exc:  # handed to the waiting attempt
                    failure.append(exc)

            thread = threading.Thread(target=run, name="webhook-dns", daemon=True)
            thread.start()
            thread.join(_left(deadline))
            if thread.is_alive():
                raise DeadlineExceeded(f"resolving {host}")
            if failure:
                raise failure[0]
            return result[0]

        return resolve


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded()
    return left


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _request_headers(target: Pinned, body: bytes, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    host = (
        target.host_header.encode("idna") if not target.host_header.isascii() else target.host_header.encode()
    )
    out: list[tuple[bytes, bytes]] = [
        (b"Host", host),
        (b"User-Agent", USER_AGENT.encode()),
        (b"Content-Length", str(len(body)).encode()),
    ]
    if target.userinfo:
        out.append((b"Authorization", b"Basic " + base64.b64encode(_unquote(target.userinfo).encode())))
    out += [
        (k.encode(), v.encode()) for k, v in headers.items() if k.lower() not in ("host", "content-length")
    ]
    return out


def _unquote(userinfo: str) -> str:
    user, _, password = userinfo.partition(":")
    return f"{unquote(user)}:{unquote(password)}"
