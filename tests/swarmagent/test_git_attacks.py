"""Attacks on the agent's git work, each reproduced first, then refused.

A tenant's repository and other agents' results steer git: a committed
symlink can aim a write at the host, a "branch" can be a git option, and the
guest's home directory can hold git configuration that runs commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from swarmagent.gitops import Author, Workspace, init_repository

ME = Author("Test Agent", "agent@example.invalid")


def _repo_with_symlinks(tmp_path: Path, outside: Path) -> Path:
    """A tenant repository whose tree holds `docs -> <outside>` and
    `notes.txt -> <outside>/notes.txt` (git stores symlinks as such)."""
    bare = tmp_path / "evil.git"
    init_repository(bare, {"README.md": "# evil\n"}, ME)
    ws = Workspace.clone(str(bare), tmp_path / "author")
    os.symlink(outside, ws.path / "docs")
    os.symlink(outside / "notes.txt", ws.path / "notes.txt")
    ws.commit("links", ME)
    ws.push("main")
    return bare


def test_a_write_through_a_committed_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    bare = _repo_with_symlinks(tmp_path, outside)
    ws = Workspace.clone(str(bare), tmp_path / "agent")
    # The attack: a plain write follows the link out of the work tree.
    (ws.path / "docs" / "probe").write_text("escaped")
    assert (outside / "probe").read_text() == "escaped"
    (outside / "probe").unlink()

    for path in ("docs/tmp/x", "docs/x", "notes.txt"):
        with pytest.raises(ValueError, match="symlink"):
            ws.write_files({path: "pwned"})
    assert list(outside.iterdir()) == []  # nothing landed outside
    assert ws.write_files({"src/ok.py": "fine\n"}) == ["src/ok.py"]
    assert (ws.path / "src" / "ok.py").read_text() == "fine\n"


def test_a_branch_that_is_a_git_option_never_reaches_git(tmp_path: Path) -> None:
    bare = tmp_path / "repo.git"
    init_repository(bare, {"README.md": "# r\n"}, ME)
    ws = Workspace.clone(str(bare), tmp_path / "agent")
    marker = tmp_path / "pwned"
    evil = f"--upload-pack=touch {marker};git-upload-pack"
    # The attack, as the reviewer used to run it: git reads the "branch" as an option.
    subprocess.run(["git", "fetch", "origin", "main", evil], cwd=ws.path, capture_output=True, check=False)
    assert marker.exists()
    marker.unlink()

    for attempt in (
        lambda: ws.diff("main", evil),
        lambda: ws.merge(evil, "main", "m", ME),
        lambda: ws.start_branch(evil, "main"),
        lambda: ws.push(evil),
        lambda: ws.changed_files(evil, "main"),
    ):
        with pytest.raises(ValueError, match="branch"):
            attempt()
    assert not marker.exists()


def test_git_ignores_the_configuration_in_the_guests_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    hooks = home / "hooks"
    hooks.mkdir(parents=True)
    marker = tmp_path / "hook-ran"
    hook = hooks / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    (home / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n")
    monkeypatch.setenv("HOME", str(home))
    # The attack: plain git in that home runs the hook.
    plain = tmp_path / "plain"
    subprocess.run(["git", "init", "-q", str(plain)], check=True)
    (plain / "f").write_text("x")
    subprocess.run(["git", "-C", str(plain), "add", "f"], check=True)
    subprocess.run(
        ["git", "-C", str(plain), "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "m"],
        check=True,
    )
    assert marker.exists()
    marker.unlink()

    ws = Workspace.init(tmp_path / "agent", "main")
    ws.write_files({"f": "x"})
    assert ws.commit("m", ME)
    assert not marker.exists()
