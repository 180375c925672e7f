"""Attacks on the agent's git work, each reproduced first, then refused.

A tenant's repository and other agents' results steer git: a committed
symlink can aim a write at the host, a "branch" can be a git option, the
guest's home directory can hold git configuration that runs commands, and a
repository (or its submodule) can be a local path or file:// URL reading
another tenant's repository."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from swarmagent.gitops import (
    DEFAULT_IDENTITY,
    Author,
    GitError,
    GitPolicy,
    RepositoryRefused,
    Workspace,
    init_repository,
)

ME = Author("Test Agent", "agent@example.invalid")


def _local(tmp_path: Path) -> GitPolicy:
    """Local repositories under the test's directory allowed (as an operator would)."""
    return GitPolicy(tmp_path / "git-home", local_root=tmp_path)


def _repo_with_symlinks(tmp_path: Path, outside: Path) -> Path:
    """A tenant repository whose tree holds `docs -> <outside>` and
    `notes.txt -> <outside>/notes.txt` (git stores symlinks as such)."""
    bare = tmp_path / "evil.git"
    init_repository(bare, {"README.md": "# evil\n"}, ME)
    ws = Workspace.clone(str(bare), tmp_path / "author", _local(tmp_path))
    os.symlink(outside, ws.path / "docs")
    os.symlink(outside / "notes.txt", ws.path / "notes.txt")
    ws.commit("links", ME)
    ws.push("main")
    return bare


def test_a_write_through_a_committed_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    bare = _repo_with_symlinks(tmp_path, outside)
    ws = Workspace.clone(str(bare), tmp_path / "agent", _local(tmp_path))
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
    ws = Workspace.clone(str(bare), tmp_path / "agent", _local(tmp_path))
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

    ws = Workspace.init(tmp_path / "agent", "main", GitPolicy(tmp_path / "git-home"))
    ws.write_files({"f": "x"})
    assert ws.commit("m", ME)
    assert not marker.exists()


def _plain_clone(
    url: str, dest: Path, *config: str, recurse: bool = False
) -> subprocess.CompletedProcess[str]:
    """git as the runtime used to run it (the guest's whole environment);
    `config`: -c name=value settings."""
    options = [arg for setting in config for arg in ("-c", setting)]
    recursive = ["--recurse-submodules"] if recurse else []
    return subprocess.run(
        ["git", *options, "clone", "--quiet", *recursive, url, str(dest)], capture_output=True, text=True
    )


def _tenants(tmp_path: Path) -> tuple[Path, Path]:
    """Tenant A's repository holding a secret, and tenant B's local directory."""
    root = tmp_path / "repos"
    secret = root / "tenant-a" / "secret.git"
    init_repository(secret, {"SECRET.txt": "tenant A's secret\n"}, ME)
    (root / "tenant-b").mkdir(parents=True)
    return secret, root / "tenant-b"


def test_a_local_or_file_repository_is_refused_unless_enabled(tmp_path: Path) -> None:
    secret, _ = _tenants(tmp_path)
    # The attack: plain git clones another tenant's repository by path or file:// URL.
    for i, url in enumerate((f"file://{secret}", str(secret))):
        assert _plain_clone(url, tmp_path / f"stolen{i}").returncode == 0
        assert (tmp_path / f"stolen{i}" / "SECRET.txt").exists()

    policy = GitPolicy(tmp_path / "git-home")  # local repositories not enabled
    for i, url in enumerate((f"file://{secret}", str(secret), f"file://localhost{secret}")):
        with pytest.raises(RepositoryRefused):
            Workspace.clone(url, tmp_path / f"agent{i}", policy)
        assert not (tmp_path / f"agent{i}").exists()
    # git itself refuses the transport too, whatever reaches it.
    done = subprocess.run(
        ["git", "clone", f"file://{secret}", str(tmp_path / "raw")],
        env=policy.environment(),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "transport 'file' not allowed" in done.stderr
    assert not (tmp_path / "raw").exists()


def test_ext_and_plain_transports_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ext = f"ext::sh -c touch% {marker}"
    # The attack: with the protocol allowed (as a host's git config may),
    # cloning the "repository" runs its command.
    _plain_clone(ext, tmp_path / "plain", "protocol.ext.allow=always")
    assert marker.exists()
    marker.unlink()

    policy = _local(tmp_path)
    for i, url in enumerate((ext, "git://example.invalid/x.git", "http://example.invalid/x.git")):
        with pytest.raises(RepositoryRefused):
            Workspace.clone(url, tmp_path / f"agent{i}", policy)
    # Whatever reaches git, even in a repository whose own configuration allows ext.
    bare = tmp_path / "r.git"
    init_repository(bare, {"README.md": "# r\n"}, ME)
    ws = Workspace.clone(str(bare), tmp_path / "ws", policy)
    ws.git("config", "protocol.ext.allow", "always")
    with pytest.raises(GitError, match="transport 'ext' not allowed"):
        ws.git("fetch", "--end-of-options", ext)
    assert not marker.exists()


def test_another_tenants_local_repository_is_refused_where_local_ones_are_enabled(tmp_path: Path) -> None:
    secret, own = _tenants(tmp_path)
    mine = own / "mine.git"
    init_repository(mine, {"README.md": "# B\n"}, ME)
    (own / "link.git").symlink_to(secret)
    sneaky = (
        f"file://{own}/../tenant-a/secret.git",
        f"{own}/../tenant-a/secret.git",
        str(own / "link.git"),  # B's directory, A's repository
        str(secret),
    )
    # The attack: each of these reaches A's repository with plain git.
    for i, url in enumerate(sneaky):
        assert _plain_clone(url, tmp_path / f"stolen{i}").returncode == 0
        assert (tmp_path / f"stolen{i}" / "SECRET.txt").exists()

    policy = GitPolicy(tmp_path / "git-home", local_root=own)  # tenant B's agent
    for i, url in enumerate(sneaky):
        with pytest.raises(RepositoryRefused):
            Workspace.clone(url, tmp_path / f"agent{i}", policy)
        assert not (tmp_path / f"agent{i}").exists()
    assert (Workspace.clone(str(mine), tmp_path / "ok", policy).path / "README.md").exists()


def test_a_submodule_cannot_fetch_a_local_repository(tmp_path: Path) -> None:
    secret, own = _tenants(tmp_path)
    policy = GitPolicy(tmp_path / "git-home", local_root=own)
    # Tenant B's own repository, with a submodule naming A's repository.
    evil = own / "evil.git"
    init_repository(evil, {"README.md": "# B\n"}, ME)
    author = Workspace.clone(str(evil), tmp_path / "author", policy)
    vendor = f"file://{secret}"
    author.git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", vendor, "vendor")
    author.commit("vendor A", ME)
    author.push("main")
    # The attack: git without the default that git 2.38.1 introduced fetches it.
    stolen = tmp_path / "stolen"
    _plain_clone(str(evil), stolen, "protocol.file.allow=always", recurse=True)
    assert (stolen / "vendor" / "SECRET.txt").exists()

    ws = Workspace.clone(str(evil), tmp_path / "agent", policy)
    with pytest.raises(GitError, match="transport 'file' not allowed"):
        ws.git("submodule", "update", "--init")
    assert not (ws.path / "vendor" / "SECRET.txt").exists()


def test_git_runs_without_the_hosts_home_ssh_keys_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "agent.sock"))
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "ext:file")
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i /root/.ssh/id_ed25519")
    known = tmp_path / "known_hosts"
    env = GitPolicy(tmp_path / "git-home", known_hosts=known).environment()
    assert env["HOME"] == str(tmp_path / "git-home") and (tmp_path / "git-home").is_dir()
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert "SSH_AUTH_SOCK" not in env and "GIT_ALLOW_PROTOCOL" not in env

    def effective(command: list[str]) -> dict[str, str]:
        """ssh's configuration for a host, as `command` would connect."""
        host = "git.example.invalid"
        out = subprocess.run([*command, "-G", host], capture_output=True, text=True, check=True)
        lines = (line.split(" ", 1) for line in out.stdout.splitlines())
        seen: dict[str, str] = {}
        for key, value in lines:
            seen[key] = f"{seen[key]} {value}" if key in seen else value
        return seen

    # Plain ssh offers the keys and trusts the known hosts of whoever runs it.
    plain = effective(["ssh"])
    assert "~/.ssh/id_ed25519" in plain["identityfile"] and ".ssh/known_hosts" in plain["userknownhostsfile"]
    ours = effective(shlex.split(env["GIT_SSH_COMMAND"]))
    assert ours["identityfile"] == "none" and ours["identityagent"] == "none"
    assert (ours["userknownhostsfile"], ours["globalknownhostsfile"]) == (str(known), os.devnull)
    assert (ours["stricthostkeychecking"], ours["batchmode"]) == ("true", "yes")


def test_git_never_looks_up_the_host_name_for_an_identity(tmp_path: Path) -> None:
    """Without an identity, git makes one from the host name, resolved in DNS
    (a guest's resolver is unreachable: each clone waited 10 s). With the
    policy's environment git has one and says whose it is."""
    policy = GitPolicy(tmp_path / "home")
    env = policy.environment()
    done = subprocess.run(
        ["git", "var", "GIT_COMMITTER_IDENT"], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith(f"{DEFAULT_IDENTITY.name} <{DEFAULT_IDENTITY.email}>")
    bare = {k: v for k, v in env.items() if not k.startswith(("GIT_COMMITTER_", "GIT_AUTHOR_"))}
    made_up = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], env=bare, capture_output=True, text=True)
    assert DEFAULT_IDENTITY.email not in made_up.stdout  # git would have made one up (from the host name)
