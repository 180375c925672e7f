"""What a branch name or a commit id from a guest may look like.

Guests steer git: a branch of `--upload-pack=<cmd>` given to `git fetch`
runs `<cmd>`. The server checks the names agents submit, and the runtime
checks them again before any git command sees one (which also passes refs
after `--end-of-options`).
"""

from __future__ import annotations

import re

MAX_BRANCH = 200
# git check-ref-format's rules, narrowed: ASCII letters, digits and ._/-;
# no leading '-' or '.', no '..', '//', '@{', trailing '/', '.' or '.lock'.
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def branch_problem(name: str) -> str | None:
    """Why `name` is not an acceptable branch name; None when it is."""
    if not name:
        return "is empty"
    if len(name) > MAX_BRANCH:
        return f"is longer than {MAX_BRANCH} characters"
    if not _BRANCH.fullmatch(name):
        return "may hold only letters, digits and ._/- and must start with a letter, digit or _"
    if ".." in name or "//" in name or name.endswith(("/", ".", ".lock")) or "/." in name:
        return "is not a valid git branch name"
    return None


def commit_problem(commit: str) -> str | None:
    """Why `commit` is not a full commit id (SHA-1 or SHA-256 hex); None when it is."""
    return None if _COMMIT.fullmatch(commit) else "must be a full lowercase hex commit id"


def check_branch(name: str) -> str:
    """`name`, or ValueError saying why it cannot be a branch."""
    problem = branch_problem(name)
    if problem is not None:
        raise ValueError(f"branch {name[:80]!r} {problem}")
    return name
