"""The agent's git work on real repositories: branch, commit, push, merge."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from swarmagent.gitops import Author, GitError, GitPolicy, Workspace, init_repository, safe_path

ME = Author("Swarm Agent", "agent@swarm.invalid")


def _log(repo: Path, branch: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", branch], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def _show(repo: Path, ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "show", ref], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def policy(tmp_path: Path) -> GitPolicy:
    """Local repositories under the test's directory allowed."""
    return GitPolicy(tmp_path / "home", local_root=tmp_path)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    bare = tmp_path / "project.git"
    init_repository(bare, {"README.md": "# demo\n", "src/app.py": "print('v1')\n"}, ME)
    return bare


def test_branch_commit_push_then_merge(repo: Path, tmp_path: Path, policy: GitPolicy) -> None:
    coder = Workspace.clone(str(repo), tmp_path / "coder", policy)
    coder.start_branch("swarm/t1-api", "main")
    assert coder.write_files({"src/api.py": "def hello():\n    return 'hi'\n"}) == ["src/api.py"]
    commit = coder.commit("Add the API", ME)
    coder.push("swarm/t1-api")
    assert "return 'hi'" in _show(repo, "swarm/t1-api:src/api.py")
    assert _log(repo, "main") == ["Initial commit"]  # main untouched until review

    reviewer = Workspace.clone(str(repo), tmp_path / "reviewer", policy)
    diff = reviewer.diff("main", "swarm/t1-api")
    assert "+def hello():" in diff
    assert reviewer.changed_files("main", "swarm/t1-api") == ["src/api.py"]
    merged = reviewer.merge("swarm/t1-api", "main", "Merge swarm/t1-api", ME)
    assert _log(repo, "main")[0] == "Merge swarm/t1-api"
    assert (
        commit
        in subprocess.run(
            ["git", "-C", str(repo), "rev-list", "main"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert (
        merged
        == subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


def test_retried_ticket_continues_its_pushed_branch(repo: Path, tmp_path: Path, policy: GitPolicy) -> None:
    first = Workspace.clone(str(repo), tmp_path / "first", policy)
    first.start_branch("swarm/t2", "main")
    first.write_files({"a.txt": "one\n"})
    first.commit("one", ME)
    first.push("swarm/t2")
    second = Workspace.clone(str(repo), tmp_path / "second", policy)
    second.start_branch("swarm/t2", "main")
    assert (second.path / "a.txt").read_text() == "one\n"
    second.write_files({"b.txt": "two\n"})
    second.commit("two", ME)
    second.push("swarm/t2")
    assert _log(repo, "swarm/t2")[:2] == ["two", "one"]


def test_concurrent_merges_all_land(repo: Path, tmp_path: Path, policy: GitPolicy) -> None:
    branches = [f"swarm/t{i}" for i in range(4)]
    for i, name in enumerate(branches):
        ws = Workspace.clone(str(repo), tmp_path / f"c{i}", policy)
        ws.start_branch(name, "main")
        ws.write_files({f"feature_{i}.py": f"N = {i}\n"})
        ws.commit(f"feature {i}", ME)
        ws.push(name)
    errors: list[Exception] = []

    def review(i: int) -> None:
        try:
            Workspace.clone(str(repo), tmp_path / f"r{i}", policy).merge(
                branches[i], "main", f"Merge {branches[i]}", ME
            )
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=review, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    log = _log(repo, "main")
    assert sorted(m for m in log if m.startswith("Merge")) == sorted(f"Merge {b}" for b in branches)


def test_conflicting_branches_fail_the_merge_cleanly(repo: Path, tmp_path: Path, policy: GitPolicy) -> None:
    for i in range(2):
        ws = Workspace.clone(str(repo), tmp_path / f"c{i}", policy)
        ws.start_branch(f"swarm/c{i}", "main")
        ws.write_files({"src/app.py": f"print('v{i + 2}')\n"})
        ws.commit(f"edit {i}", ME)
        ws.push(f"swarm/c{i}")
    reviewer = Workspace.clone(str(repo), tmp_path / "reviewer", policy)
    reviewer.merge("swarm/c0", "main", "Merge c0", ME)
    with pytest.raises(GitError, match="merge"):
        reviewer.merge("swarm/c1", "main", "Merge c1", ME)
    assert reviewer.git("status", "--porcelain") == ""  # no half-merged tree left behind
    assert _log(repo, "main")[0] == "Merge c0"


@pytest.mark.parametrize(
    "bad", ["/etc/passwd", "../outside.txt", "a/../../b", ".git/config", "src/.git/hooks/x", "", "a//../../b"]
)
def test_untrusted_paths_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        safe_path(tmp_path, bad)
    ws = Workspace.init(tmp_path / "w", "main", GitPolicy(tmp_path / "home"))
    with pytest.raises(ValueError):
        ws.write_files({bad: "x"})
    assert not (tmp_path / "outside.txt").exists()
