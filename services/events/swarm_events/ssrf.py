"""Webhook targets may not point into our own network (SSRF guard).

The host is resolved and EVERY address it resolves to must be a public one:
private, loopback, link-local, multicast, unspecified and reserved ranges are
refused unless an allow-list setting names them (tests allow loopback;
on-prem installs allow their own ranges). The dispatcher connects to the
address it checked (`pin`), so a DNS answer that changes between the check
and the connect (rebinding) cannot steer a delivery inward.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from swarmcommon.errors import InvalidArgument

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL = 2048


def parse_networks(raw: str) -> list[Network]:
    """'127.0.0.0/8, ::1/128' -> networks; a bad entry is a start-up error."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    # Most specific first: link-local and loopback ranges count as private too.
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return label
    return None


def resolve_allowed(url: str, allowed: Sequence[Network], field: str = "url") -> list[str]:
    """The addresses `url` may be delivered to, or InvalidArgument saying why not."""
    if len(url) > MAX_URL:
        raise InvalidArgument(field, f"is too long (> {MAX_URL} characters)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(field, "must be an absolute http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(field, f"host {parts.hostname!r} does not resolve") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        reason = _forbidden(ip)
        if reason and not any(ip in net for net in allowed):
            raise InvalidArgument(
                field,
                f"{parts.hostname} resolves to {reason} address {ip}; webhooks must target public hosts",
            )
    return addresses


@dataclass(frozen=True)
class Pinned:
    """A request target with the host replaced by a checked address."""

    url: str
    host_header: str
    # The name TLS must present a certificate for (None for plain http).
    sni_hostname: str | None


def pin(url: str, allowed: Sequence[Network]) -> Pinned:
    """Resolve and check `url` once, and aim the request at the checked address."""
    address = resolve_allowed(url, allowed)[0]
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    userinfo, _, host_header = parts.netloc.rpartition("@")
    if userinfo:  # kept in the URL: httpx turns it into basic auth
        netloc = f"{userinfo}@{netloc}"
    return Pinned(
        urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host_header,
        host if parts.scheme == "https" else None,
    )
