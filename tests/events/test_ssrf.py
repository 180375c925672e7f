"""The SSRF guard refuses every special-purpose range, whichever way it is
spelled (IPv4, IPv4-mapped IPv6, NAT64, 6to4), and lets public addresses
through; a delivery goes to the very address that passed the check.

Each range case resolves a name through the resolver the guard uses (the
system resolver, here answered by the test): nothing is sent anywhere."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from swarm.events.v1 import events_pb2 as pb
from swarm_events.ssrf import parse_networks, resolve_allowed
from swarmcommon.errors import InvalidArgument
from tests.events.helpers import attempts, hook, publish, start_live
from tests.support.harness import BACKENDS
from tests.support.receivers import Receiver
from tests.support.waiting import eventually

HOST = "hooks.target.test"

REFUSED = [
    pytest.param("0.1.2.3", id="this-network-0/8"),
    pytest.param("10.1.2.3", id="private-10/8"),
    pytest.param("100.64.0.1", id="cgnat-100.64/10-low"),
    pytest.param("100.100.100.200", id="cgnat-alibaba-metadata"),
    pytest.param("100.127.255.254", id="cgnat-100.64/10-high"),
    pytest.param("127.0.0.1", id="loopback"),
    pytest.param("169.254.169.254", id="link-local-metadata"),
    pytest.param("172.16.0.1", id="private-172.16/12"),
    pytest.param("192.0.0.100", id="ietf-protocol-192.0.0/24"),
    pytest.param("192.0.0.8", id="ietf-protocol-192.0.0/24-low"),
    pytest.param("192.0.2.10", id="documentation-test-net-1"),
    pytest.param("192.88.99.1", id="6to4-relay-anycast"),
    pytest.param("192.168.1.1", id="private-192.168/16"),
    pytest.param("198.18.0.1", id="benchmarking-198.18/15"),
    pytest.param("198.19.255.254", id="benchmarking-198.18/15-high"),
    pytest.param("198.51.100.7", id="documentation-test-net-2"),
    pytest.param("203.0.113.9", id="documentation-test-net-3"),
    pytest.param("224.0.0.1", id="multicast"),
    pytest.param("240.0.0.1", id="reserved-240/4"),
    pytest.param("255.255.255.255", id="broadcast"),
    pytest.param("::", id="v6-unspecified"),
    pytest.param("::1", id="v6-loopback"),
    pytest.param("::ffff:10.0.0.1", id="v4-mapped-private"),
    pytest.param("::ffff:127.0.0.1", id="v4-mapped-loopback"),
    pytest.param("::ffff:169.254.169.254", id="v4-mapped-metadata"),
    pytest.param("::ffff:100.100.100.200", id="v4-mapped-cgnat"),
    pytest.param("::ffff:0:a00:1", id="v4-translated-private"),
    pytest.param("::10.0.0.1", id="v4-compatible"),
    pytest.param("64:ff9b::a9fe:a9fe", id="nat64-of-metadata"),
    pytest.param("64:ff9b::a00:1", id="nat64-of-private"),
    pytest.param("64:ff9b::6464:64c8", id="nat64-of-cgnat"),
    pytest.param("64:ff9b::7f00:1", id="nat64-of-loopback"),
    pytest.param("64:ff9b:1::a00:1", id="nat64-local-use"),
    pytest.param("100::1", id="v6-discard-only"),
    pytest.param("2001::1", id="teredo"),
    pytest.param("2001:db8::1", id="v6-documentation"),
    pytest.param("2002:a00:1::1", id="6to4-of-private"),
    pytest.param("2002:a9fe:a9fe::1", id="6to4-of-metadata"),
    pytest.param("3fff::1", id="v6-documentation-3fff"),
    pytest.param("5f00::1", id="srv6-sids"),
    pytest.param("fc00::1", id="ula-fc00"),
    pytest.param("fd12:3456:789a::1", id="ula-fd00"),
    pytest.param("fe80::1", id="v6-link-local"),
    pytest.param("fec0::1", id="v6-site-local"),
    pytest.param("ff02::1", id="v6-multicast"),
]

ALLOWED = [
    pytest.param("93.184.216.34", id="public-v4"),
    pytest.param("100.63.255.255", id="just-below-cgnat"),
    pytest.param("100.128.0.1", id="just-above-cgnat"),
    pytest.param("192.0.1.1", id="just-above-192.0.0/24"),
    pytest.param("198.17.255.254", id="just-below-benchmarking"),
    pytest.param("198.20.0.1", id="just-above-benchmarking"),
    pytest.param("2606:4700:4700::1111", id="public-v6"),
    pytest.param("::ffff:93.184.216.34", id="v4-mapped-public"),
    pytest.param("64:ff9b::5db8:d822", id="nat64-of-public"),
    pytest.param("2002:5db8:d822::1", id="6to4-of-public"),
]


@pytest.fixture
def resolves_to(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make HOST resolve to one chosen address in the system resolver."""
    real = socket.getaddrinfo

    def answer(address: str) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET

        def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
            if host == HOST:
                sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
                return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
            return real(host, port, *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    return answer


@pytest.mark.parametrize("address", REFUSED)
def test_special_purpose_addresses_are_refused(resolves_to: Any, address: str) -> None:
    resolves_to(address)
    with pytest.raises(InvalidArgument) as info:
        resolve_allowed(f"https://{HOST}/hooks", [])
    assert info.value.field == "url"
    assert str(ipaddress.ip_address(address)) in info.value.message
    assert "webhooks must target public hosts" in info.value.message


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(resolves_to: Any, address: str) -> None:
    resolves_to(address)
    assert resolve_allowed(f"https://{HOST}/hooks", []) == [str(ipaddress.ip_address(address))]


def test_an_allow_list_opens_a_refused_range_and_only_that_range(resolves_to: Any) -> None:
    on_prem = parse_networks("100.64.0.0/10")
    resolves_to("100.100.100.200")
    assert resolve_allowed(f"https://{HOST}/hooks", on_prem) == ["100.100.100.200"]
    resolves_to("10.0.0.1")
    with pytest.raises(InvalidArgument, match="10.0.0.1"):
        resolve_allowed(f"https://{HOST}/hooks", on_prem)


# -- SSRF: the checked address is the one connected to -------------------------------------


@BACKENDS
def test_delivery_connects_to_the_address_that_passed_the_check(
    db: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name first resolves to the allowed receiver, then to
    another loopback address outside the allow-list (nobody listens there).
    The request must still go to the first answer, with the original Host."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1"] * 2 + ["127.0.0.2"] * 1000)  # create (1) + send-time check (1)

    def rebinding(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "hooks.rebind.test":
            return real(next(answers), *args, **kw)
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    live = start_live(db, webhook_allow_networks="127.0.0.1/32")
    try:
        port = receiver.url.split(":")[2].split("/")[0]
        webhook_id, secret = hook(live, f"http://hooks.rebind.test:{port}/hooks/swarm", ["*"])
        publish(live, "acme", "ticket.completed")
        receiver.wait_for(1)
        headers, body = receiver.received[0]
        assert headers["host"] == f"hooks.rebind.test:{port}"
        Webhook(secret).verify(body, headers)
        assert json.loads(body)["event"] == "ticket.completed"
        # The next send resolves to 127.0.0.2, outside the allow-list: refused, not sent.
        publish(live, "acme", "ticket.completed")
        eventually(lambda: len(attempts(live, webhook_id)) >= 2)
        blocked = attempts(live, webhook_id)[0]
        assert blocked.outcome == pb.ATTEMPT_OUTCOME_FAILED and "127.0.0.2" in blocked.error
        assert len(receiver.received) == 1
    finally:
        live.stop()
