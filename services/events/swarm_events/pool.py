"""Kept-alive webhook connections, per endpoint.

A connection that ended its exchange cleanly (both sides done, the endpoint
did not ask to close) waits here for the next request to the same endpoint,
so a burst to one receiver pays for one TCP (and TLS) handshake per slot,
not one per delivery.

An endpoint is everything the connection was checked and made for: scheme,
the pinned address (a name that now resolves elsewhere is a different
endpoint, so DNS rebinding cannot ride on an old connection), port, TLS name
and Host header. Bounded in every direction an endpoint could push:

- at most `per_endpoint` idle connections per endpoint and `total` in all
  (the oldest idle one is closed to make room);
- an idle connection older than `idle_seconds` is closed, never reused;
- a connection with anything to read while idle (the endpoint closed it, or
  sent bytes nobody asked for) is closed, never reused.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import OrderedDict
from typing import NamedTuple

from swarm_events.ssrf import Pinned


class Endpoint(NamedTuple):
    scheme: str
    address: str
    port: int
    sni_hostname: str | None
    host_header: str


def endpoint_of(target: Pinned) -> Endpoint:
    return Endpoint(target.scheme, target.address, target.port, target.sni_hostname, target.host_header)


class _Idle(NamedTuple):
    sock: socket.socket
    since: float


class KeepAlivePool:
    def __init__(self, per_endpoint: int, total: int = 256, idle_seconds: float = 15.0) -> None:
        if per_endpoint < 1 or total < 1:
            raise ValueError("a pool keeps at least one connection")
        self.per_endpoint = per_endpoint
        self.total = total
        self.idle_seconds = idle_seconds
        self._idle: OrderedDict[Endpoint, list[_Idle]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        self._closed = False

    def take(self, endpoint: Endpoint) -> socket.socket | None:
        """A live idle connection to `endpoint`, most recently used first."""
        stale: list[socket.socket] = []
        found = None
        with self._lock:
            idle = self._idle.get(endpoint, [])
            horizon = time.monotonic() - self.idle_seconds
            while idle and found is None:
                entry = idle.pop()
                self._count -= 1
                if entry.since < horizon or _has_input(entry.sock):
                    stale.append(entry.sock)
                else:
                    found = entry.sock
            if not idle:
                self._idle.pop(endpoint, None)
        _close(stale)
        return found

    def give(self, endpoint: Endpoint, sock: socket.socket) -> None:
        """Keep `sock` for the next request to `endpoint` (or close it, if full)."""
        evicted: list[socket.socket] = []
        with self._lock:
            if self._closed:
                evicted.append(sock)
            else:
                idle = self._idle.setdefault(endpoint, [])
                self._idle.move_to_end(endpoint)
                idle.append(_Idle(sock, time.monotonic()))
                self._count += 1
                if len(idle) > self.per_endpoint:
                    evicted.append(idle.pop(0).sock)
                    self._count -= 1
                while self._count > self.total:
                    evicted.append(self._pop_oldest())
        _close(evicted)

    def idle(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks = [e.sock for idle in self._idle.values() for e in idle]
            self._idle.clear()
            self._count = 0
        _close(socks)

    def _pop_oldest(self) -> socket.socket:
        endpoint, idle = next(iter(self._idle.items()))
        entry = idle.pop(0)
        if not idle:
            del self._idle[endpoint]
        self._count -= 1
        return entry.sock


def _has_input(sock: socket.socket) -> bool:
    """Readable while idle: closed by the peer, or unasked-for bytes."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _close(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):  # already reset by the peer: closed is closed
            sock.close()
