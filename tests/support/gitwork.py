"""git as a test's own hands: run it with no user or system configuration,
and push a commit to a repository's main branch the way someone outside the
platform would (e.g. a bad change a rollback then discards)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    """`git args` in `cwd`, with a fixed identity; its output, stripped."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    ident = ["-c", "user.name=Agent", "-c", "user.email=agent@example.invalid"]
    done = subprocess.run(
        ["git", *ident, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def push_commit(repository: Path, work: Path, file: str = "bad.txt", message: str = "bad change") -> str:
    """Clone `repository` into `work`, commit `file` on main and push it; the new head."""
    git(work.parent, "clone", "-q", str(repository), str(work))
    (work / file).write_text(message)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")
