"""Where a project's git repository is, and whether a tenant may name it.

A project's `repository` reaches git in an agent's hands, and git reads far
more than URLs: `ext::<command>` runs a command, a local path or `file://`
reads any repository on the machine (another tenant's included), and a
`user:password@` URL stores a credential where every agent sees it. So a
repository is parsed here into a small, strict shape (https, ssh or scp-like
`user@host:path` on a named host, or an absolute local path), and the checks
that use it are plain functions: ticketing's per-tenant allow-list when a
project is created, and the agent runtime's own check before it clones.

Paths are compared segment by segment after refusing anything a server or
curl might rewrite (`.`/`..` segments, empty segments, percent-escapes), so
`github.com/acme/` never covers `github.com/acme-evil/x` or
`github.com/acme/../beta/x`. An scp-like path is compared without its
leading '/', like an ssh:// one: an allow-list entry names a namespace on a
host, whichever way it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
_USER = re.compile(r"[A-Za-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._~+@:-]+")
# [user@]host:path, git's "scp-like" syntax (a ':' before any '/').
_SCP = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>[^:]*)")
_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<authority>[^/]*)(?P<path>/.*)?")

SHAPES = "https://host/path, ssh://[user@]host[:port]/path, user@host:path or an absolute local path"


@dataclass(frozen=True)
class Repository:
    """A parsed repository: `scheme` https, ssh or file (local; `host` empty)."""

    scheme: str
    host: str
    port: str
    segments: tuple[str, ...]

    @property
    def local(self) -> bool:
        return self.scheme == "file"

    @property
    def path(self) -> str:
        return "/" + "/".join(self.segments)


def _segments(path: str, what: str) -> tuple[str, ...]:
    """The path's segments (one leading and one trailing '/' allowed), or
    ValueError naming the segment a server or curl could rewrite."""
    inner = path.removeprefix("/").removesuffix("/")
    if not inner:
        raise ValueError(f"{what} names no path")
    parts = tuple(inner.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"{what} may not hold empty, '.' or '..' path segments")
        if not _SEGMENT.fullmatch(part):
            raise ValueError(
                f"{what} path segments may hold only letters, digits and ._~+@:- (got {part[:40]!r})"
            )
    return parts


def _host(host: str, what: str) -> str:
    host = host.lower()
    if not _HOST.fullmatch(host):
        raise ValueError(f"{what} host {host[:60]!r} is not a host name or IPv4 address")
    return host


def _port(port: str, what: str) -> str:
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{what} port {port[:10]!r} is not a port number")
    return port


def _user(user: str) -> None:
    if ":" in user:
        raise ValueError("must not carry a password or token (agents get their credentials per ticket)")
    if not _USER.fullmatch(user):
        raise ValueError(f"user name {user[:40]!r} may hold only letters, digits and ._-")


def parse(value: str) -> Repository:
    """`value` as a Repository, or ValueError saying what is wrong with it."""
    if not value.isprintable() or any(c in value for c in " \\%?#") or value.startswith("-"):
        raise ValueError(
            "may not hold spaces, control characters, backslashes, %-escapes, '?', '#' or a leading '-'"
        )
    if "::" in value:  # git's <transport>::<address>, e.g. ext::<command>
        raise ValueError(f"must be {SHAPES} (no <transport>:: addresses)")
    if value.startswith("/"):
        return Repository("file", "", "", _segments(value, "the local path"))
    url = _URL.fullmatch(value)
    if url is not None:
        return _from_url(url["scheme"], url["authority"], url["path"] or "")
    scp = _SCP.fullmatch(value)
    if scp is not None:
        if scp["user"] is not None:
            _user(scp["user"])
        return Repository("ssh", _host(scp["host"], "the"), "", _segments(scp["path"], "the repository"))
    raise ValueError(f"must be {SHAPES}")


def _from_url(scheme: str, authority: str, path: str) -> Repository:
    if scheme == "file":
        if authority:
            raise ValueError("a file:// URL must name a local path (file:///path)")
        return Repository("file", "", "", _segments(path, "the local path"))
    if scheme not in ("https", "ssh"):
        raise ValueError(f"must be {SHAPES} ({scheme}:// is not allowed)")
    user, _, hostport = authority.rpartition("@")
    if user:
        _user(user)
    host, _, port = hostport.partition(":")
    return Repository(scheme, _host(host, "the"), _port(port, "the"), _segments(path, "the repository"))


@dataclass(frozen=True)
class Prefix:
    """An allow-list entry, `host[:port][/path/...]`: every https, ssh and
    scp-like repository on that host (and port, as written) whose path starts
    with these segments."""

    host: str
    port: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Prefix:
        what = f"repository prefix {text.strip()[:80]!r}:"
        if "://" in text or "@" in text:
            raise ValueError(f"{what} write host[:port]/path/, not a URL")
        hostport, _, path = text.strip().partition("/")
        host, _, port = hostport.partition(":")
        segments = _segments(path, what) if path.strip("/") else ()
        return cls(_host(host, what), _port(port, what), segments)

    def covers(self, repository: Repository) -> bool:
        n = len(self.segments)
        return (
            not repository.local
            and (repository.host, repository.port) == (self.host, self.port)
            and repository.segments[:n] == self.segments
        )

    def __str__(self) -> str:
        hostport = f"{self.host}:{self.port}" if self.port else self.host
        return "/".join((hostport, *self.segments)) + "/"


def local_segments(root: str) -> tuple[str, ...]:
    """An absolute directory as path segments, or ValueError."""
    if not PurePosixPath(root).is_absolute():
        raise ValueError(f"{root!r} is not an absolute path")
    return _segments(root, "the directory") if root.strip("/") else ()


def is_under(repository: Repository, directory: tuple[str, ...]) -> bool:
    """A local repository strictly inside `directory` (segments)."""
    n = len(directory)
    return repository.local and len(repository.segments) > n and repository.segments[:n] == directory
