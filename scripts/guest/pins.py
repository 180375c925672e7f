"""Prints the third-party packages the agent runtime needs, pinned to the
versions installed here (the ones the tests run), one `name==version` a line:
the closure of swarmagent's and swarmcommon's requirements, extras included.
The guest image installs exactly these, so it runs what CI tested."""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOTS = ("swarmagent", "swarmcommon")


def closure(roots: tuple[str, ...]) -> dict[str, str]:
    """Every distribution `roots` need (theirs excluded), name -> version."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        if name not in roots:
            pins[str(canonicalize_name(dist.metadata["Name"]))] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in wanted):
                todo.append((str(canonicalize_name(req.name)), frozenset(req.extras)))
    return pins


def main() -> int:
    for name, version in sorted(closure(ROOTS).items()):
        sys.stdout.write(f"{name}=={version}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
