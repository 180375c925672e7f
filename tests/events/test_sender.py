"""The sender alone, against real local endpoints: a total deadline per
attempt, a capped read, the SSRF pin before any connection, per-endpoint
slots, and shutdown abandoning requests in flight."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from swarm_events.domain import Outcome, Signing
from swarm_events.pool import Endpoint, KeepAlivePool, endpoint_of
from swarm_events.sender import LOG_CAP, READ_CAP, EndpointSlots, Message, Sender
from swarm_events.ssrf import Pinned, parse_networks
from swarmcommon.clock import SystemClock
from tests.events.endpoints import (
    header_trickling_endpoint,
    huge_body_endpoint,
    keep_alive_endpoint,
    silent_endpoint,
    trickling_endpoint,
)
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOOPBACK = parse_networks("127.0.0.0/8")


@pytest.fixture
def sender() -> Iterator[Sender]:
    s = Sender(SystemClock(), LOOPBACK, deadline=0.5)
    yield s
    s.close()


def post(sender: Sender, url: str) -> Outcome:
    return sender.post(url, b'{"event":"ticket.completed"}', {"Content-Type": "application/json"})


def test_a_delivery_is_signed_and_answered(sender: Sender, receiver: Receiver) -> None:
    clock = SystemClock()
    message = Message(
        receiver.url, Signing(SECRET, None, None), "evt-1", "ticket.completed", clock.now(), {"a": 1}
    )
    outcome = sender.send(message)
    assert outcome.ok and outcome.status_code == 200 and outcome.body == '{"ok": true}'
    assert not outcome.truncated and outcome.error is None and not outcome.timed_out
    headers, body = receiver.received[0]
    assert Webhook(SECRET).verify(body, headers)["data"] == {"a": 1}
    assert headers["webhook-id"] == "evt-1"


def test_a_burst_to_one_endpoint_reuses_its_connection(sender: Sender) -> None:
    with keep_alive_endpoint() as endpoint:
        bodies = [post(sender, endpoint.url).body for _ in range(20)]
        assert bodies == [f"conn-1-req-{i}" for i in range(1, 21)]
        assert endpoint.connections == 1
        assert sender.pool.idle() == 1


def test_a_connection_the_endpoint_dropped_while_idle_is_replaced_once(sender: Sender) -> None:
    with keep_alive_endpoint(after_first="drop") as endpoint:
        first = post(sender, endpoint.url)
        eventually(lambda: endpoint.active == 0, what="the endpoint to drop the connection")
        second = post(sender, endpoint.url)
        assert (first.body, second.body) == ("conn-1-req-1", "conn-2-req-1")
        assert second.ok and second.error is None
        assert endpoint.requests == 2, "the dropped connection carried no request"


def test_an_endpoint_that_asks_to_close_is_not_kept(sender: Sender) -> None:
    with keep_alive_endpoint(close_header=True) as endpoint:
        assert [post(sender, endpoint.url).body for _ in range(3)] == [
            "conn-1-req-1",
            "conn-2-req-1",
            "conn-3-req-1",
        ]
        assert sender.pool.idle() == 0


@pytest.mark.parametrize("when", ["inject", "inject_later"])
def test_words_sent_unasked_on_an_idle_connection_are_never_read_as_an_answer(
    sender: Sender, when: str
) -> None:
    """Attack: after its first answer the endpoint sends a second one nobody
    asked for, hoping a later delivery reads it as its own answer (a forged
    success, or a reply out of step). A connection with bytes after its answer
    (read with it, or arriving while it idles) is closed, never reused: the
    next delivery goes over a new one. (Reused, the next delivery read
    "conn-1-req-2" or, injected while idle, the forged "INJECTED".)"""
    with keep_alive_endpoint(after_first=when) as endpoint:
        assert post(sender, endpoint.url).body == "conn-1-req-1"
        assert endpoint.injected.wait(5)
        time.sleep(0.05)  # the injected bytes reach our socket buffer
        second = post(sender, endpoint.url)
        assert second.body == "conn-2-req-1" and second.body != "INJECTED"
        assert endpoint.connections == 2


def test_a_huge_body_is_read_only_up_to_the_cap(sender: Sender) -> None:
    with huge_body_endpoint(64 * 1024 * 1024) as big:
        outcome = post(sender, big.url)
        assert outcome.ok and outcome.truncated
        assert outcome.bytes_read <= READ_CAP  # never more than the cap off the socket
        assert outcome.body == "x" * LOG_CAP  # the log keeps the start
        eventually(lambda: big.responses and big.responses[0].done.is_set())
        assert not big.responses[0].finished


def test_a_trickled_body_is_cut_at_the_deadline(sender: Sender) -> None:
    with trickling_endpoint(interval=0.05) as slow:
        outcome = post(sender, slow.url)
    # Every read returned quickly; only a deadline on the whole attempt ends it.
    assert outcome.timed_out and outcome.status_code == 200 and outcome.ok
    assert outcome.error is not None and "still arriving after 0.5s" in outcome.error
    assert 0 < len(outcome.body) < 100 and set(outcome.body) == {"."}
    assert outcome.duration_ms < 5000


def test_trickled_headers_are_cut_at_the_deadline(sender: Sender) -> None:
    with header_trickling_endpoint(interval=0.02) as slow:
        outcome = post(sender, slow.url)
    assert outcome.timed_out and outcome.status_code is None and not outcome.ok
    assert outcome.error == "Timeout: no complete answer within 0.5s"
    assert outcome.duration_ms < 5000


def test_a_silent_endpoint_times_out(sender: Sender) -> None:
    with silent_endpoint() as silent:
        outcome = post(sender, silent.url)
    assert outcome.timed_out and not outcome.ok and "Timeout" in (outcome.error or "")


def test_a_refused_target_is_never_connected_to(sender: Sender) -> None:
    outcome = post(sender, "http://10.20.30.40:9/hook")
    assert not outcome.ok and outcome.bytes_read == 0
    assert outcome.error is not None and outcome.error.startswith("blocked: ")
    assert "private address 10.20.30.40" in outcome.error


def test_a_closed_port_is_a_connect_error(sender: Sender) -> None:
    with silent_endpoint() as gone:
        url = gone.url
    outcome = post(sender, url)
    assert not outcome.ok and outcome.error is not None and outcome.error.startswith("ConnectError")


def test_closing_abandons_requests_in_flight() -> None:
    sender = Sender(SystemClock(), LOOPBACK, deadline=60)
    outcomes: list[Outcome] = []
    with trickling_endpoint(interval=0.05) as slow:
        thread = threading.Thread(target=lambda: outcomes.append(post(sender, slow.url)))
        thread.start()
        eventually(lambda: slow.active == 1, what="the request in flight")
        sender.close()
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert outcomes[0].aborted and not outcomes[0].ok
    assert post(sender, slow.url).aborted  # and nothing new starts


def test_slots_bound_each_endpoint_separately() -> None:
    slots = EndpointSlots(per_endpoint=2)
    assert slots.try_take("a") and slots.try_take("a")
    assert not slots.try_take("a")
    assert slots.full() == {"a"}
    assert slots.try_take("b")  # another endpoint is not affected
    slots.give_back("a")
    assert slots.full() == set() and slots.try_take("a")
    with slots.taken("c") as free:
        assert free and slots.held("c") == 1
    assert slots.held("c") == 0
    with pytest.raises(ValueError, match="at least 1"):
        EndpointSlots(0)


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """An HTTPS endpoint on 127.0.0.1 whose certificate names hooks.tls.test;
    yields (port, certificate, the server names clients asked for)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.tls.test"]
        + ["-addext", "subjectAltName=DNS:hooks.tls.test"],
        check=True,
        capture_output=True,
    )
    names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name or "")  # type: ignore[func-returns-value]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield str(server.server_address[1]), cert, names
    finally:
        server.shutdown()
        server.server_close()


def test_https_goes_to_the_pinned_address_with_the_urls_name(
    tls_endpoint: tuple[str, Path, list[str]],
) -> None:
    port, cert, names = tls_endpoint
    sender = Sender(
        SystemClock(),
        LOOPBACK,
        deadline=5,
        resolver=lambda host, port: ["127.0.0.1"],
        tls=ssl.create_default_context(cafile=str(cert)),
    )
    outcome = post(sender, f"https://hooks.tls.test:{port}/hooks")
    assert outcome.status_code == 202 and outcome.ok, outcome.error
    assert names == ["hooks.tls.test"]  # SNI and certificate checks use the name, not the address
    # A name the certificate does not cover is refused, pinned or not.
    wrong = post(sender, f"https://other.tls.test:{port}/hooks")
    assert not wrong.ok and wrong.error is not None and wrong.error.startswith("TLSError")
    assert "certificate" in wrong.error


def test_a_kept_connection_serves_only_the_address_it_was_made_for() -> None:
    """DNS rebinding: the same host name, resolved to another address on the
    next delivery, must not get the connection made to the first address
    (nor one made for another Host or TLS name at the same address)."""
    first = Endpoint("https", "203.0.113.7", 443, "hooks.example", "hooks.example")
    pool = KeepAlivePool(per_endpoint=2)
    a, b = socket.socketpair()
    try:
        pool.give(first, a)
        for other in (
            first._replace(address="127.0.0.1"),
            first._replace(host_header="other.example"),
            first._replace(sni_hostname="other.example"),
            first._replace(scheme="http"),
        ):
            assert pool.take(other) is None
        assert pool.take(first) is a
        # And the sender keys by the address it pinned, not by the URL's name.
        pinned = Pinned("https", "203.0.113.7", 443, "hooks.example", "/h", "hooks.example", None)
        assert endpoint_of(pinned) == first
        assert endpoint_of(dataclasses.replace(pinned, address="127.0.0.1")) != first
    finally:
        pool.close()
        a.close()
        b.close()
