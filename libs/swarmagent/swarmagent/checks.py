"""The checking stages an agent runs, and the judge of an ensemble.

- security: read the diff of the branch the coder pushed and look for
  vulnerabilities; refused, it sends the ticket back to the coder with its
  findings (a failure with `review: rejected`, which ticketing turns into a
  send-back).
- tests: add tests for the change on the ticket's branch, run the
  repository's tests in this sandbox, commit and push what it added;
  failing tests send the ticket back with their output (the tests stay on
  the branch for the coder to make pass).
- judge: see every attempt of an ensemble (their diffs), choose one and say
  why; ticketing checks the choice and opens the merge request for it.

The model answers in the JSON its template's prompt fixes; the test command
comes from the template's parameters (`test_command`, `test_timeout_seconds`),
never from the model, and runs with a scrubbed environment (no agent
credentials, no proxy settings).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent.client import ClaimedTicket
from swarmagent.gitops import Workspace
from swarmagent.llm import TrackedLLM
from swarmagent.loop import WorkFailed

if TYPE_CHECKING:
    from swarmagent.runtime import Runtime

tracer = trace.get_tracer("swarmagent.checks")

MAX_FINDINGS = 20
MAX_DIFF = 100_000
DEFAULT_TEST_COMMAND = (sys.executable, "-m", "unittest", "discover", "-v")
DEFAULT_TEST_TIMEOUT = 300
MAX_TEST_TIMEOUT = 1800
OUTPUT_TAIL = 3000
REJECTED = "rejected"


def previous_result(claimed: ClaimedTicket) -> dict[str, Any]:
    """What the ticket's previous stage handed back ({} when nothing)."""
    raw = claimed.ticket.result_json
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def proposed_files(answer: dict[str, Any], *, required: bool) -> dict[str, str]:
    """The model's `files` as path -> content (none at all fails a stage that needs some)."""
    files = answer.get("files", [])
    if not isinstance(files, list) or (required and not files):
        raise WorkFailed("the model proposed no files", {"answer": str(answer)[:500]})
    try:
        return {str(f["path"]): str(f["content"]) for f in files}
    except (KeyError, TypeError) as exc:
        raise WorkFailed("each file needs a path and a content", {"answer": str(answer)[:500]}) from exc


def write(ws: Workspace, changes: dict[str, str]) -> None:
    with tracer.start_as_current_span("file.write", attributes={"files": len(changes)}):
        try:
            ws.write_files(changes)
        except ValueError as exc:
            raise WorkFailed(str(exc)) from exc


def _parameters(claimed: ClaimedTicket) -> dict[str, Any]:
    t = claimed.template
    try:
        value = json.loads(t.parameters_json) if t is not None and t.parameters_json else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _findings(answer: dict[str, Any]) -> list[dict[str, str]]:
    raw = answer.get("findings", [])
    items = raw if isinstance(raw, list) else [raw]
    found = []
    for item in items[:MAX_FINDINGS]:
        if isinstance(item, dict):
            found.append({k: str(item.get(k, ""))[:500] for k in ("file", "issue", "fix")})
        else:
            found.append({"file": "", "issue": str(item)[:500], "fix": ""})
    return found


def security(rt: Runtime, claimed: ClaimedTicket, llm: TrackedLLM, workdir: Path) -> dict[str, Any]:
    t = claimed.ticket
    ws, branch, base, previous = rt.checkout(claimed, workdir)
    diff = ws.diff(base, branch)
    verdict = rt.ask(claimed, llm, "llm.security_review", f"Ticket: {t.name}\n\nDiff:\n{diff[:MAX_DIFF]}")
    findings = _findings(verdict)
    if verdict.get("approve") is not True:
        said = "; ".join(f"{f['file'] or '?'}: {f['issue']}" for f in findings) or "no findings given"
        raise WorkFailed(
            f"security review rejected: {said[:1500]}",
            {"review": REJECTED, "branch": branch, "findings": findings},
        )
    return {
        "review": "approved",
        "branch": branch,
        "commit": previous.get("commit", ""),
        "findings": findings,
    }


def test_command(claimed: ClaimedTicket) -> tuple[list[str], int]:
    """The command that runs the repository's tests, and its time limit: the
    template's, else `python -m unittest discover`."""
    parameters = _parameters(claimed)
    command = parameters.get("test_command", list(DEFAULT_TEST_COMMAND))
    if not (
        isinstance(command, list)
        and command
        and all(isinstance(a, str) and a and len(a) < 500 for a in command)
    ):
        raise WorkFailed("the tests template's test_command must be a list of strings (argv)")
    limit = parameters.get("test_timeout_seconds", DEFAULT_TEST_TIMEOUT)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_TEST_TIMEOUT:
        limit = DEFAULT_TEST_TIMEOUT
    return command[:50], limit


def _run_tests(ws: Workspace, command: list[str], limit: int) -> tuple[int, str]:
    """(exit status, the output's tail); a run past its limit is a failure."""
    scrubbed = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ws.path),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with tracer.start_as_current_span(
        "tests.run", attributes={"tests.command": " ".join(command)[:200]}
    ) as span:
        try:
            done = subprocess.run(
                command, cwd=ws.path, env=scrubbed, capture_output=True, text=True, timeout=limit, check=False
            )
        except subprocess.TimeoutExpired:
            span.set_attribute("tests.exit_code", -1)
            return -1, f"the tests ran longer than {limit} s and were stopped"
        except OSError as exc:
            return -1, f"the test command could not start: {exc.strerror}"
        span.set_attribute("tests.exit_code", done.returncode)
        return done.returncode, (done.stdout + done.stderr)[-OUTPUT_TAIL:]


def tests(rt: Runtime, claimed: ClaimedTicket, llm: TrackedLLM, workdir: Path) -> dict[str, Any]:
    t = claimed.ticket
    command, limit = test_command(claimed)
    ws, branch, base, _ = rt.checkout(claimed, workdir)
    ws.start_branch(branch, base)
    diff = ws.diff(base, branch)
    answer = rt.ask(claimed, llm, "llm.generate_tests", f"Ticket: {t.name}\n\nDiff:\n{diff[:MAX_DIFF]}")
    added = proposed_files(answer, required=False)
    write(ws, added)
    status, output = _run_tests(ws, command, limit)
    with tracer.start_as_current_span("git.commit"):
        commit = ws.commit(f"Tests for {t.name}\n\nSwarm-Ticket: {claimed.id}", rt.author)
    with tracer.start_as_current_span("git.push", attributes={"git.branch": branch}):
        ws.push(branch)
    if status != 0:
        last = output.strip().splitlines()[-1:] or ["no output"]
        raise WorkFailed(
            f"tests failed (exit {status}): {last[0][:300]}",
            {
                "review": REJECTED,
                "branch": branch,
                "commit": commit,
                "findings": [{"file": "", "issue": "tests failed", "fix": output}],
            },
        )
    return {
        "branch": branch,
        "commit": commit,
        "tests": sorted(added),
        "passed": True,
        "output": output[-500:],
    }


def _attempt_result(a: pb.EnsembleAttempt) -> dict[str, Any]:
    try:
        value = json.loads(a.result_json) if a.result_json else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def judge(rt: Runtime, claimed: ClaimedTicket, llm: TrackedLLM, workdir: Path) -> dict[str, Any]:
    t = claimed.ticket
    candidates = [
        a
        for a in claimed.attempts
        if a.state == pb.TICKET_STATE_DONE and not a.rejected and _attempt_result(a)
    ]
    if not candidates:
        raise WorkFailed(
            f"no attempt to choose from ({len(claimed.attempts)} attempts, none done and unrejected)"
        )
    ws, base = rt.workspace(claimed, workdir)
    share = MAX_DIFF // len(candidates)
    sections = []
    for a in candidates:
        work = _attempt_result(a)
        diff = ws.diff(base, str(work.get("branch", "")))
        sections.append(
            f"## Attempt {a.attempt} (id {a.ticket_id})\nSummary: {str(work.get('summary', ''))[:300]}\n"
            f"Diff:\n{diff[:share]}"
        )
    answer = rt.ask(
        claimed, llm, "llm.judge", f"Ticket: {t.name}\n\n{t.description}\n\n" + "\n\n".join(sections)
    )
    choice = str(answer.get("choice", "")).strip()
    chosen = next((a for a in candidates if choice in (a.ticket_id, str(a.attempt))), None)
    if chosen is None:
        raise WorkFailed(
            f"the judge chose {choice[:64]!r}, not one of attempts {[a.attempt for a in candidates]}",
            {"answer": str(answer)[:500]},
        )
    rationale = str(answer.get("rationale", "")).strip()
    if not rationale:
        raise WorkFailed("the judge gave no rationale for its choice", {"answer": str(answer)[:500]})
    return {"choice": chosen.ticket_id, "attempt": chosen.attempt, "rationale": rationale[:4000]}


Stage = Callable[["Runtime", ClaimedTicket, TrackedLLM, Path], dict[str, Any]]
STAGES: dict[int, Stage] = {
    pb.AGENT_ROLE_SECURITY: security,
    pb.AGENT_ROLE_TESTS: tests,
    pb.AGENT_ROLE_JUDGE: judge,
}
