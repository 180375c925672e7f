"""Webhook targets may not point into our own network (SSRF guard).

The host is resolved and EVERY address it resolves to must be a public one.
The special-purpose ranges of the IANA registries are refused — private,
shared (CGNAT, where cloud metadata services such as Alibaba's
100.100.100.200 live), loopback, link-local, documentation, benchmarking,
multicast, reserved — and so are the IPv6 spellings of them: IPv4-mapped,
IPv4-translated, NAT64 (64:ff9b::/96) and 6to4 addresses are judged by the
IPv4 address inside them, and anything outside global unicast (2000::/3) is
refused. An allow-list setting opens named networks (tests allow loopback;
on-prem installs their own ranges).

The sender connects to the address it checked (`pin`), so a DNS answer that
changes between the check and the connect (rebinding) cannot steer a
delivery inward.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from swarmcommon.errors import InvalidArgument

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to.
Resolver = Callable[[str, int], list[str]]
MAX_URL = 2048


def _table(rows: Sequence[tuple[str, str]]) -> list[tuple[Network, str]]:
    return [(ipaddress.ip_network(net), label) for net, label in rows]


# Most specific first where ranges nest.
_V4 = _table(
    [
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    ]
)
_V6 = _table(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("::/8", "reserved"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001:db8::/32", "documentation"),
        ("2001::/23", "IETF protocol assignment (Teredo and others)"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "SRv6 segment"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
)
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_networks(raw: str) -> list[Network]:
    """'127.0.0.0/8, ::1/128' -> networks; a bad entry is a start-up error."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the
    spellings that reach an IPv4 host (mapped, translated, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _TRANSLATED or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def forbidden_reason(ip: Address) -> str | None:
    """Why `ip` is not a public address, or None if it is."""
    if isinstance(ip, ipaddress.IPv4Address):
        return next((label for net, label in _V4 if ip in net), None)
    inner = embedded_ipv4(ip)
    if inner is not None:
        reason = forbidden_reason(inner)
        return f"{reason} (IPv4 {inner} inside)" if reason else None
    for net, label in _V6:
        if ip in net:
            return label
    return None if ip in _GLOBAL_UNICAST else "non-global"


def _is_allowed(ip: Address, allowed: Sequence[Network]) -> bool:
    candidates: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
        candidates.append(inner)
    return any(candidate in net for candidate in candidates for net in allowed)


def system_resolver(host: str, port: int) -> list[str]:
    """The system resolver (looked up at call time, so tests can answer for it)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def _split(url: str, field: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL."""
    if len(url) > MAX_URL:
        raise InvalidArgument(field, f"is too long (> {MAX_URL} characters)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(field, "must be an absolute http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidArgument(field, "has an invalid port") from exc
    return parts.scheme, parts.hostname, port


def resolve_allowed(
    url: str, allowed: Sequence[Network], field: str = "url", resolver: Resolver | None = None
) -> list[str]:
    """The addresses `url` may be delivered to, or InvalidArgument saying why not."""
    _, host, port = _split(url, field)
    try:
        addresses = (resolver or system_resolver)(host, port)
    except (OSError, ValueError, UnicodeError) as exc:
        raise InvalidArgument(field, f"host {host!r} does not resolve") from exc
    if not addresses:
        raise InvalidArgument(field, f"host {host!r} does not resolve")
    checked = []
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        reason = forbidden_reason(ip)
        if reason and not _is_allowed(ip, allowed):
            raise InvalidArgument(
                field, f"{host} resolves to {reason} address {ip}; webhooks must target public hosts"
            )
        checked.append(str(ip))
    return checked


@dataclass(frozen=True)
class Pinned:
    """A request target aimed at an address that passed the check."""

    scheme: str
    address: str
    port: int
    # What the Host header says: the URL's host[:port], never the address.
    host_header: str
    # Path and query to request.
    target: str
    # The name TLS must present a certificate for (None for plain http).
    sni_hostname: str | None
    # user:password from the URL, sent as Basic auth.
    userinfo: str | None


def pin(url: str, allowed: Sequence[Network], resolver: Resolver | None = None) -> Pinned:
    """Resolve and check `url` once, and aim the request at the checked address."""
    address = resolve_allowed(url, allowed, resolver=resolver)[0]
    scheme, host, port = _split(url, "url")
    parts = urlsplit(url)
    userinfo, _, host_header = parts.netloc.rpartition("@")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Pinned(
        scheme=scheme,
        address=address,
        port=port,
        host_header=host_header,
        target=target,
        sni_hostname=host if scheme == "https" else None,
        userinfo=userinfo or None,
    )
