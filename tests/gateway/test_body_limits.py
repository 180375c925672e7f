"""Large requests: valid large operations succeed whole; a request too large
for the gateway is a clear 413 (never a 429 "retry later" or a 5xx); and a
body is neither read before the caller is authenticated nor read past the
cap, whatever its Content-Length says.

The raw-socket tests speak HTTP/1.1 by hand so they can keep sending while
watching for the gateway's answer, as a slow or hostile client would."""

from __future__ import annotations

import select
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.harness import BACKENDS
from tests.support.mesh import Mesh

pytestmark = BACKENDS

MiB = 1024 * 1024
LONG = 20_000  # the longest description a ticket may have


def _project(name: str, count: int, first: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "tickets": [
            {"key": f"k{i}", "name": f"ticket {i}", "description": f"{i}:".ljust(LONG, "d")}
            for i in range(first, first + count)
        ],
    }


def _tickets_used(client: httpx.Client) -> int:
    usage = {u["resource"]: u for u in client.get("/api/quota/usage").json()["resources"]}
    used: int = usage["tickets_per_day"]["used"]
    return used


def _big_tenant(mesh: Mesh) -> str:
    return mesh.tenant_with_key(f"big-{uuid.uuid4().hex[:6]}", plan="pro", tickets_per_day=10_000)


def test_a_project_of_500_long_tickets_is_created_whole(mesh: Mesh) -> None:
    with mesh.as_key(_big_tenant(mesh)) as client:
        r = client.post("/api/projects", json=_project("big", 500))
        assert r.status_code == 201, r.text[:500]
        tickets = r.json()["tickets"]
        assert len(tickets) == 500
        assert all(len(t["description"]) == LONG for t in tickets)
        assert _tickets_used(client) == 500


def test_a_page_of_1000_long_tickets_comes_back_whole(mesh: Mesh) -> None:
    with mesh.as_key(_big_tenant(mesh)) as client:
        for n in range(2):
            r = client.post("/api/projects", json=_project(f"big {n}", 500, first=500 * n))
            assert r.status_code == 201, r.text[:500]
        r = client.get("/api/tickets", params={"page_size": 1000})
        assert r.status_code == 200, r.text[:500]
        page = r.json()
        assert len(page["items"]) == 1000 and page["next_page_token"] == ""
        assert {t["description"] for t in page["items"]} == {f"{i}:".ljust(LONG, "d") for i in range(1000)}


def _assert_413_and_nothing_written(client: httpx.Client, r: httpx.Response) -> None:
    assert r.status_code == 413, (r.status_code, r.text[:500])
    assert "Retry-After" not in r.headers
    error = r.json()["error"]
    assert error["reason"] == "PAYLOAD_TOO_LARGE" and "too large" in error["message"]
    assert client.get("/api/projects").json()["items"] == []
    assert _tickets_used(client) == 0


def test_a_body_over_the_cap_is_413_and_writes_nothing(mesh: Mesh) -> None:
    cap = mesh.app.state.settings.max_body_bytes
    body = _project("too big", cap // LONG + 10)
    with mesh.as_key(_big_tenant(mesh)) as client:
        r = client.post("/api/projects", json=body)
        _assert_413_and_nothing_written(client, r)
        assert str(cap) in r.json()["error"]["message"]


def test_a_request_too_large_for_the_backends_is_413_not_429(mesh: Mesh) -> None:
    # A gateway whose own cap is set above what gRPC carries: the backend
    # call is refused as too large, and that is still the caller's 413.
    body = _project("too big for grpc", 1700)  # ~34 MB, over the 32 MiB gRPC limit
    with (
        mesh.gateway(max_body_bytes=64 * MiB) as base_url,
        mesh.as_key(_big_tenant(mesh), base_url) as client,
    ):
        r = client.post("/api/projects", json=body)
        _assert_413_and_nothing_written(client, r)


# -- bodies on the wire -----------------------------------------------------------------------


@contextmanager
def _connect(base_url: str) -> Iterator[socket.socket]:
    url = urlsplit(base_url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    try:
        yield sock
    finally:
        sock.close()


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answered(sock: socket.socket, wait: float = 0.0) -> bool:
    readable, _, _ = select.select([sock], [], [], wait)
    return bool(readable)


def _status(sock: socket.socket) -> tuple[int, bytes]:
    """The status code and the whole answer (the gateway may hang up right after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(data.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


def _send_until_answered(sock: socket.socket, chunk: bytes, limit: int, *, chunked: bool) -> int:
    """Send `chunk` again and again (chunked framing or raw) until the gateway
    answers or `limit` bytes went out; returns the body bytes sent."""
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
    sent = 0
    while sent < limit and not _answered(sock):
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            break  # it answered and hung up while we were still sending
        sent += len(chunk)
    return sent


def test_no_key_is_401_before_the_body_is_read(mesh: Mesh) -> None:
    for auth in ({}, {"Authorization": "Bearer not-a-key"}):
        with _connect(mesh.base_url) as sock:
            sock.sendall(_head("/api/projects", {"Content-Length": str(10**9), **auth}))
            sent = _send_until_answered(sock, b" " * 65536, 64 * MiB, chunked=False)
            status, answer = _status(sock)
            assert status == 401, answer[:500]
            # A gigabyte was announced; the answer came long before it was sent.
            assert sent < 16 * MiB, sent


def test_a_declared_length_over_the_cap_is_413_before_the_body_is_read(mesh: Mesh) -> None:
    key = _big_tenant(mesh)
    cap = mesh.app.state.settings.max_body_bytes
    with _connect(mesh.base_url) as sock:
        sock.sendall(
            _head("/api/projects", {"Content-Length": str(cap + 1), "Authorization": f"Bearer {key}"})
        )
        sock.sendall(b"{")
        assert _answered(sock, wait=15), "no answer before the body was sent"
        status, answer = _status(sock)
        assert status == 413, answer[:500]
        assert b"PAYLOAD_TOO_LARGE" in answer


def test_a_chunked_body_over_the_cap_is_413_while_it_streams(mesh: Mesh) -> None:
    key = _big_tenant(mesh)
    with mesh.gateway(max_body_bytes=1 * MiB) as base_url, _connect(base_url) as sock:
        sock.sendall(
            _head("/api/projects", {"Transfer-Encoding": "chunked", "Authorization": f"Bearer {key}"})
        )
        sent = _send_until_answered(sock, b" " * 65536, 256 * MiB, chunked=True)
        assert _answered(sock, wait=15), f"no answer after {sent} bytes of a never-ending body"
        status, answer = _status(sock)
        assert status == 413, answer[:500]
        assert sent < 64 * MiB, sent


def test_a_content_length_lie_does_not_lift_the_cap(mesh: Mesh) -> None:
    # A small Content-Length beside a chunked body that never ends: the
    # chunked framing wins (RFC 9112), so the bytes are counted as they come.
    key = _big_tenant(mesh)
    with mesh.gateway(max_body_bytes=1 * MiB) as base_url, _connect(base_url) as sock:
        headers = {"Content-Length": "2", "Transfer-Encoding": "chunked", "Authorization": f"Bearer {key}"}
        sock.sendall(_head("/api/projects", headers))
        sent = _send_until_answered(sock, b" " * 65536, 256 * MiB, chunked=True)
        assert _answered(sock, wait=15), f"no answer after {sent} bytes"
        status, answer = _status(sock)
        assert status == 413, answer[:500]
        assert sent < 64 * MiB, sent
    with mesh.as_key(key) as client:
        assert client.get("/api/projects").json()["items"] == []
