"""Which git repositories a tenant's projects may name.

A project's repository is what its agents clone, push to and merge into: a
tenant naming another tenant's repository would have agents read and change
it. So every repository is checked when a project is created, against the
operator's settings (config.py):

- remote (https, ssh, `user@host:path`): only under one of the tenant's
  prefixes in `repository_prefixes` (`acme=github.com/acme/`); a tenant
  with none may name no remote repository;
- local (an absolute path or `file://`): only when the operator set
  `local_repository_root`, and then only under `<root>/<tenant_id>/`.

A settings string, not a table: allow-lists change when an operator
onboards a tenant, which is a deploy anyway, and there is nothing to
administer at runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from swarmcommon.errors import InvalidArgument, PermissionDenied
from swarmcommon.gitrepos import Prefix, Repository, is_under, local_segments, parse

REASON = "REPOSITORY_NOT_ALLOWED"


def parse_prefixes(text: str) -> dict[str, tuple[Prefix, ...]]:
    """ "tenant=prefix,prefix;tenant=prefix" as {tenant: prefixes}, or ValueError."""
    allowed: dict[str, tuple[Prefix, ...]] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        tenant, sep, prefixes = item.partition("=")
        if not sep or not tenant.strip():
            raise ValueError(f"{item.strip()[:80]!r} is not tenant=prefix,prefix")
        entries = tuple(Prefix.parse(p) for p in prefixes.split(",") if p.strip())
        allowed[tenant.strip()] = allowed.get(tenant.strip(), ()) + entries
    return allowed


@dataclass(frozen=True)
class RepositoryPolicy:
    prefixes: Mapping[str, tuple[Prefix, ...]] = field(default_factory=dict)
    local_root: str = ""  # empty: no local repositories

    @classmethod
    def from_settings(cls, repository_prefixes: str, local_repository_root: str) -> RepositoryPolicy:
        if local_repository_root:
            local_segments(local_repository_root)  # ValueError when not absolute
        return cls(parse_prefixes(repository_prefixes), local_repository_root)

    def check(self, tenant_id: str, repository: str) -> str:
        """`repository` when `tenant_id` may name it ("" names none);
        INVALID_ARGUMENT when it is not a repository this platform clones,
        PERMISSION_DENIED when it is not this tenant's to name."""
        if not repository:
            return repository
        try:
            parsed = parse(repository)
        except ValueError as exc:
            raise InvalidArgument("repository", str(exc)) from exc
        if parsed.local:
            self._check_local(tenant_id, parsed)
        else:
            self._check_remote(tenant_id, parsed)
        return repository

    def _check_local(self, tenant_id: str, repository: Repository) -> None:
        if not self.local_root:
            raise PermissionDenied(
                "repository: local repositories (paths and file:// URLs) are not enabled on this "
                "installation; name an https:// or ssh:// repository",
                reason=REASON,
                field="repository",
            )
        home = f"{PurePosixPath(self.local_root) / tenant_id}/"
        if not is_under(repository, local_segments(self.local_root) + (tenant_id,)):
            raise PermissionDenied(
                f"repository: tenant {tenant_id}'s local repositories must be under {home} "
                f"(got {repository.path[:200]})",
                reason=REASON,
                field="repository",
            )

    def _check_remote(self, tenant_id: str, repository: Repository) -> None:
        allowed = self.prefixes.get(tenant_id, ())
        if any(prefix.covers(repository) for prefix in allowed):
            return
        where = ", ".join(str(p) for p in allowed) or "none: ask an operator to allow your repository host"
        raise PermissionDenied(
            f"repository: {repository.host}{repository.path[:200]} is not under a repository prefix "
            f"allowed for tenant {tenant_id} (allowed: {where})",
            reason=REASON,
            field="repository",
        )
