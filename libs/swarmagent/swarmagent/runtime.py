"""What an agent does with a claimed ticket: real git work and LLM calls.

- coder (and the other authoring stages): clone the project's repository,
  branch (or continue the ticket's pushed branch), ask the LLM for file
  changes, write them, commit, push the branch; the result names the branch
  and commit.
- reviewer: fetch the branch the previous stage pushed, ask the LLM to review
  its diff, and merge it into the base branch when approved; a rejection is
  reported as a failure with the reviewer's reasons (`review: rejected`: the
  ticket goes back to its author).
- security, tests and judge: `swarmagent.checks`.

A coder whose work came back (a checking stage refused it) gets the reasons
in its prompt and continues the ticket's branch.

Each step is a span with the seed's names (git.clone, llm.generate_code,
file.write, git.commit, git.push, llm.review, git.merge) inside the agent's
`agent.work` span, so it lands in the ticket's trace. The LLM is reached
through the tracked client: with an agent token, through the platform's LLM
proxy (which owns the budget and the cost ledger; the guest holds no
provider key); without one (insecure dev mode), budget first, cost recorded
after.

The model answers in JSON (a `files` list, or a review verdict); an answer
that is not valid JSON of that shape fails the stage with a clear reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
from opentelemetry import trace

from swarm.ticketing.v1 import ticketing_pb2 as pb
from swarmagent import checks
from swarmagent.checks import previous_result, proposed_files, write
from swarmagent.client import ClaimedTicket, TicketingClient
from swarmagent.credentials import current as agent_credentials
from swarmagent.gitops import Author, GitError, GitPolicy, Workspace
from swarmagent.llm import Attribution, TrackedLLM
from swarmagent.llmproxy import NoProxy, proxy_client
from swarmagent.loop import WorkFailed
from swarmcommon.clients import TelemetryClient
from swarmcommon.errors import SwarmError

tracer = trace.get_tracer("swarmagent.runtime")
log = logging.getLogger(__name__)

JSON_BLOCK = re.compile(r"\{.*\}", re.DOTALL)


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "work"


def answer_json(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer (it may wrap it in prose or a code fence)."""
    match = JSON_BLOCK.search(text)
    try:
        value = json.loads(match.group(0) if match else text)
    except json.JSONDecodeError as exc:
        raise WorkFailed("the model's answer is not JSON", {"answer": text[:500]}) from exc
    if not isinstance(value, dict):
        raise WorkFailed("the model's answer is not a JSON object", {"answer": text[:500]})
    return value


def _text(message: Any) -> str:
    return "".join(getattr(block, "text", "") for block in message.content)


@dataclass(frozen=True)
class Instructions:
    """What the claim's template version says this stage runs with."""

    system: str
    model: str
    max_tokens: int
    label: str  # slug@version, for spans and errors


def instructions(claimed: ClaimedTicket, default_model: str, default_max_tokens: int) -> Instructions:
    """The stage's system prompt, model and token cap, from the template
    version ticketing handed out with the claim: the runtime has no prompt of
    its own, so a bad version reaches only the tickets its rollout gives it."""
    t = claimed.template
    if t is None or not t.prompt:
        raise WorkFailed("the claim carries no agent template: ticketing must hand one out with every claim")
    try:
        parameters = json.loads(t.parameters_json or "{}")
    except json.JSONDecodeError:
        parameters = {}
    cap = parameters.get("max_tokens") if isinstance(parameters, dict) else None
    max_tokens = cap if isinstance(cap, int) and 1 <= cap <= 64_000 else default_max_tokens
    return Instructions(t.prompt, t.model or default_model, max_tokens, f"{t.template_slug}@{t.version}")


@dataclass
class Runtime:
    llm: TrackedLLM
    repository: str
    base_branch: str
    workroot: Path
    author: Author
    model: str
    git: GitPolicy  # what git may reach (swarmagent.gitops)
    max_tokens: int = 4096
    # The project's conventions and lessons for a held ticket (TicketingClient.lessons).
    lessons: Callable[[ClaimedTicket], str] | None = None

    def work(self, claimed: ClaimedTicket) -> dict[str, Any]:
        """The AgentLoop work function."""
        llm = self.llm.for_ticket(str(claimed.ticket.project_id), claimed.id, claimed.stage_name)
        workdir = self.workroot / f"{claimed.id[:8]}-{uuid.uuid4().hex[:8]}"
        try:
            if claimed.stage == pb.AGENT_ROLE_REVIEWER:
                return self.review(claimed, llm, workdir)
            if claimed.stage in checks.STAGES:
                return checks.STAGES[claimed.stage](self, claimed, llm, workdir)
            return self.code(claimed, llm, workdir)
        except GitError as exc:
            raise WorkFailed(str(exc)) from exc
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _where(self, claimed: ClaimedTicket) -> tuple[str, str]:
        """The ticket's project repository and base branch, else this runtime's."""
        t = claimed.ticket
        if t.repository:
            return str(t.repository), str(t.base_branch or "main")
        if not self.repository:
            raise WorkFailed("the ticket's project names no repository and this agent has none configured")
        return self.repository, self.base_branch

    def _clone(self, repository: str, workdir: Path, claimed: ClaimedTicket) -> Workspace:
        """The repository, with the ticket's credential when ticketing gave one
        (this workspace's git commands only: the next ticket starts without)."""
        policy = self.git
        credential = claimed.git_credential
        if credential is not None and credential.username:
            policy = policy.with_credential(repository, credential.username, credential.password)
        with tracer.start_as_current_span("git.clone", attributes={"git.repository": repository}):
            return Workspace.clone(repository, workdir, policy)

    def ask(self, claimed: ClaimedTicket, llm: TrackedLLM, span: str, text: str) -> dict[str, Any]:
        """The stage's template asked about `text`; its answer's JSON object."""
        how = instructions(claimed, self.model, self.max_tokens)
        with tracer.start_as_current_span(
            span, attributes={"gen_ai.request.model": how.model, "swarm.agent_template": how.label}
        ):
            reply = llm.create(
                model=how.model,
                max_tokens=how.max_tokens,
                system=how.system,
                messages=[{"role": "user", "content": text}],
            )
        return answer_json(_text(reply))

    def checkout(self, claimed: ClaimedTicket, workdir: Path) -> tuple[Workspace, str, str, dict[str, Any]]:
        """The workspace on the branch the previous stage handed back, with its
        base and that stage's result (no branch: the stage fails)."""
        previous = previous_result(claimed)
        branch = previous.get("branch")
        if not isinstance(branch, str) or not branch:
            raise WorkFailed(
                f"the {claimed.stage_name} stage has nothing to check: "
                "the previous stage handed back no branch"
            )
        ws, base = self.workspace(claimed, workdir)
        return ws, branch, base, previous

    def workspace(self, claimed: ClaimedTicket, workdir: Path) -> tuple[Workspace, str]:
        """The ticket's repository cloned into `workdir`, and its base branch."""
        repository, base = self._where(claimed)
        return self._clone(repository, workdir, claimed), base

    def code(self, claimed: ClaimedTicket, llm: TrackedLLM, workdir: Path) -> dict[str, Any]:
        t = claimed.ticket
        branch = f"swarm/{claimed.id[:8]}-{slug(t.name)}"
        repository, base = self._where(claimed)
        ws = self._clone(repository, workdir, claimed)
        ws.start_branch(branch, base)
        files_now = sorted(
            p.relative_to(ws.path).as_posix() for p in ws.path.rglob("*") if ".git" not in p.parts
        )
        prompt = (
            f"Ticket: {t.name}\n\n{t.description}\n\nRepository files: {', '.join(files_now) or '(none)'}\n"
            f"Stage: {claimed.stage_name}"
        )
        if t.failure_count and t.last_failure_reason:
            prompt += f"\n\nYour last change to this ticket came back: {t.last_failure_reason}\nFix that."
        prompt += self._lessons(claimed)
        answer = self.ask(claimed, llm, "llm.generate_code", prompt)
        changes = proposed_files(answer, required=True)
        write(ws, changes)
        summary = str(answer.get("summary", ""))[:200]
        with tracer.start_as_current_span("git.commit"):
            commit = ws.commit(f"{t.name}\n\n{summary}\n\nSwarm-Ticket: {claimed.id}", self.author)
        with tracer.start_as_current_span("git.push", attributes={"git.branch": branch}):
            ws.push(branch)
        return {"branch": branch, "commit": commit, "files": sorted(changes), "summary": summary}

    def _lessons(self, claimed: ClaimedTicket) -> str:
        """What the project's history says, to append to the prompt: lessons
        help, and their absence (ticketing slow or down) never fails the stage."""
        if self.lessons is None:
            return ""
        try:
            section = self.lessons(claimed)
        except SwarmError as exc:
            log.warning("no lessons for ticket %s: %s", claimed.id, exc.message)
            return ""
        return f"\n\n{section}" if section else ""

    def review(self, claimed: ClaimedTicket, llm: TrackedLLM, workdir: Path) -> dict[str, Any]:
        t = claimed.ticket
        ws, branch, base, previous = self.checkout(claimed, workdir)
        diff = ws.diff(base, branch)
        verdict = self.ask(claimed, llm, "llm.review", f"Ticket: {t.name}\n\nDiff:\n{diff[:100_000]}")
        comments = str(verdict.get("comments", ""))[:2000]
        if verdict.get("approve") is not True:
            raise WorkFailed(
                f"review rejected: {comments or 'no reason given'}", {"branch": branch, "review": "rejected"}
            )
        with tracer.start_as_current_span("git.merge", attributes={"git.branch": branch}):
            merged = ws.merge(branch, base, f"Merge {branch}: {t.name}", self.author)
        return {
            "review": "approved",
            "comments": comments,
            "branch": branch,
            "commit": previous.get("commit", ""),
            "merge_commit": merged,
        }


class FromEnvironment:
    """The work function a guest runs (SWARM_AGENT_WORK=swarmagent.runtime:work),
    configured by the environment vmhost gives it: SWARM_REPOSITORY,
    SWARM_BASE_BRANCH, SWARM_LLM_BASE_URL, SWARM_LLM_MODEL,
    SWARM_TELEMETRY_TARGET, SWARM_TENANT_ID, SWARM_AGENT_ID, and for git
    SWARM_GIT_LOCAL_ROOT and SWARM_GIT_KNOWN_HOSTS (GitPolicy).

    With an agent token (SWARM_AGENT_TOKEN) the LLM endpoint is the
    platform's LLM proxy, called with the current token as the API key
    (swarmagent.llmproxy); the proxy owns budgets and the cost ledger.
    Without one (insecure dev mode) it is whatever SWARM_LLM_BASE_URL names
    (a local Messages-API server in tests and the offline demo) with
    ANTHROPIC_API_KEY, and usage is recorded through telemetry. The runtime is
    built at the first ticket, not at import: the zygote imports this module
    before forking and must hold no threads or connections."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._telemetry: TelemetryClient | None = None
        self._ticketing: TicketingClient | None = None
        self._lock = threading.Lock()

    def __call__(self, claimed: ClaimedTicket) -> dict[str, Any]:
        return self._built().work(claimed)

    def _built(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = self._build(os.environ)
            return self._runtime

    def llm(self, env: Mapping[str, str]) -> TrackedLLM:
        """The agent's tracked LLM client, as its environment configures it."""
        attribution = Attribution(env["SWARM_TENANT_ID"], env["SWARM_AGENT_ID"])
        credentials = agent_credentials()
        if credentials.token:
            try:
                client = proxy_client(env, credentials)
            except NoProxy as exc:
                raise WorkFailed(str(exc)) from exc
            # The token renewed by the heartbeat, read at every call.
            return TrackedLLM(client, None, attribution, api_key=lambda: credentials.token)
        client = anthropic.Anthropic(
            base_url=env.get("SWARM_LLM_BASE_URL") or None,
            api_key=env.get("ANTHROPIC_API_KEY", "unset"),
            max_retries=2,
        )
        self._telemetry = TelemetryClient(env["SWARM_TELEMETRY_TARGET"], **credentials.channel("telemetry"))
        return TrackedLLM(client, self._telemetry, attribution)

    def _build(self, env: Mapping[str, str]) -> Runtime:
        workroot = Path.cwd() / "work"
        if env.get("SWARM_TICKETING_TARGET"):
            credentials = agent_credentials()
            self._ticketing = TicketingClient(
                env["SWARM_TICKETING_TARGET"],
                env["SWARM_TENANT_ID"],
                env["SWARM_AGENT_ID"],
                credentials=credentials if credentials.token else None,
            )
        return Runtime(
            self.llm(env),
            env.get("SWARM_REPOSITORY", ""),  # the ticket's project usually names it
            env.get("SWARM_BASE_BRANCH", "main"),
            workroot,
            Author(
                env.get("SWARM_GIT_AUTHOR", "Swarm Agent"), env.get("SWARM_GIT_EMAIL", "agents@swarm.invalid")
            ),
            env.get("SWARM_LLM_MODEL", "claude-sonnet-4-6"),
            # git's HOME is the agent's own (empty) directory, never the host's.
            GitPolicy.from_environment(env, workroot / ".git-home"),
            lessons=self._ticketing.lessons if self._ticketing is not None else None,
        )

    def close(self) -> None:
        """The agent is stopping: send the usage records still waiting, then disconnect."""
        with self._lock:
            if self._runtime is not None:
                self._runtime.llm.close()
            if self._telemetry is not None:
                self._telemetry.close()
            if self._ticketing is not None:
                self._ticketing.close()
            self._runtime, self._telemetry, self._ticketing = None, None, None


work = FromEnvironment()
