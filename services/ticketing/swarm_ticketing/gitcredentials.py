"""Credentials for tenants' https repositories, handed out with a claim.

A guest never holds the host's git credentials (it has no host HOME); to
clone and push a private repository it needs the tenant's. The operator
keeps them in a credential store; ticketing hands the one for the claimed
ticket's repository to the agent that claimed it, with the claim (and to
no one else), valid as long as the lease. The runtime gives it to git
through GIT_ASKPASS (swarmagent.gitops), only for git commands against
that repository, and drops it with the ticket.

The store here is a file the operator writes (SWARM_TICKETING_GIT_CREDENTIALS_FILE),
a JSON list of entries:

    [{"tenant_id": "acme", "repository_prefix": "github.com/acme/",
      "username": "x-access-token", "password": "..."}]

A prefix has the syntax of `repository_prefixes` (host[:port]/path/): an
entry serves the tenant's https repositories under it, the longest prefix
winning. Put narrowly scoped, revocable tokens in it (a deploy token per
repository or group); a store that mints short-lived tokens per claim
plugs in as another `CredentialStore`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from swarmcommon.gitrepos import Prefix, parse


@dataclass(frozen=True)
class GitSecret:
    username: str
    password: str


@dataclass(frozen=True)
class Entry:
    tenant_id: str
    prefix: Prefix
    secret: GitSecret


class CredentialStore(Protocol):
    def for_repository(self, tenant_id: str, repository: str) -> GitSecret | None:
        """The credential for the tenant's https repository, or None."""


@dataclass(frozen=True)
class FileCredentials:
    entries: Sequence[Entry] = ()

    @classmethod
    def load(cls, path: str) -> FileCredentials:
        """The operator's file (no path: no credentials); ValueError naming
        the entry that is wrong."""
        if not path:
            return cls()
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"git credentials file {path}: {exc}") from exc
        if not isinstance(raw, list):
            raise ValueError(f"git credentials file {path}: expected a JSON list of entries")
        return cls(tuple(_entry(path, i, item) for i, item in enumerate(raw)))

    def for_repository(self, tenant_id: str, repository: str) -> GitSecret | None:
        try:
            parsed = parse(repository)
        except ValueError:
            return None
        if parsed.scheme != "https":  # a password over ssh or to a local path: never
            return None
        matches = [e for e in self.entries if e.tenant_id == tenant_id and e.prefix.covers(parsed)]
        if not matches:
            return None
        return max(matches, key=lambda e: (len(e.prefix.segments), bool(e.prefix.port))).secret


def _entry(path: str, index: int, item: object) -> Entry:
    where = f"git credentials file {path}, entry {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object")
    fields = {}
    for name in ("tenant_id", "repository_prefix", "username", "password"):
        value = item.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: {name} must be a non-empty string")
        fields[name] = value
    if unknown := sorted(set(item) - set(fields)):
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        prefix = Prefix.parse(fields["repository_prefix"])
    except ValueError as exc:
        raise ValueError(f"{where}: repository_prefix: {exc}") from exc
    return Entry(fields["tenant_id"], prefix, GitSecret(fields["username"], fields["password"]))
