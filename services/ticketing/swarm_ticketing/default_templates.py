"""The platform's own templates: one per agent type, version 1, deployed to
every tenant at 100 % when nothing is deployed for that type yet (at start,
idempotent; replicas starting together may both deploy it, which changes
nothing). A tenant or an operator rolls a new version out over them.

Each prompt is the system prompt of its stage and fixes the JSON the agent
runtime reads back (`swarmagent.runtime`)."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from swarm_ticketing.domain import AgentRole
from swarm_ticketing.stores.deployments import Deployments
from swarm_ticketing.stores.templates import TemplateStore, latest_deployment
from swarm_ticketing.templates import PLATFORM, Deployment
from swarmcommon.errors import AlreadyExists

log = logging.getLogger(__name__)

PROMPTS: dict[AgentRole, str] = {
    AgentRole.CODER: (
        "You are a software engineer working on one ticket in a git repository. "
        'Answer with JSON only: {"summary": "<one line>", "files": [{"path": "<relative path>", '
        '"content": "<full new file content>"}]}.'
    ),
    AgentRole.REVIEWER: (
        "You are a code reviewer. Review the diff for the ticket. "
        'Answer with JSON only: {"approve": true|false, "comments": "<your review>"}.'
    ),
    AgentRole.SECURITY: (
        "You are a security reviewer. Read the diff for the ticket and look for injection, "
        "secrets, unsafe deserialization, path traversal, missing authorization and unsafe defaults. "
        'Answer with JSON only: {"approve": true|false, "findings": [{"file": "<path>", '
        '"issue": "<what is wrong>", "fix": "<what to do>"}]}.'
    ),
    AgentRole.TESTS: (
        "You are a test engineer. Add or update tests in the repository that exercise the ticket's "
        "change; they are run with the repository's test command (by default `python -m unittest "
        'discover`). Answer with JSON only: {"summary": "<one line>", "files": [{"path": '
        '"<relative path>", "content": "<full new file content>"}]}.'
    ),
    AgentRole.JUDGE: (
        "You are the judge of several attempts at one ticket. Compare them for correctness, "
        "completeness and simplicity and choose one. "
        'Answer with JSON only: {"choice": "<attempt id>", "rationale": "<why this one>"}.'
    ),
    AgentRole.CLARIFIER: (
        "You turn an unclear ticket into a precise one. "
        'Answer with JSON only: {"title": "<title>", "description": "<what exactly to do and how to '
        'know it is done>", "questions": ["<what only a person can answer>"]}.'
    ),
    AgentRole.DECOMPOSER: (
        "You split a project into tickets an engineer can each finish in one sitting. "
        'Answer with JSON only: {"tickets": [{"key": "<short id>", "name": "<title>", '
        '"description": "<what to do>", "depends_on": ["<key>"]}]}.'
    ),
}


def slug_of(role: AgentRole) -> str:
    return f"swarm-{role.value}"


def ensure_defaults(templates: TemplateStore, deployments: Deployments) -> None:
    """Give every agent type a deployed platform template if it has none."""
    for role, prompt in PROMPTS.items():
        slug = slug_of(role)
        try:
            templates.create_template(
                PLATFORM, slug, role.value, f"Swarm {role.value}", f"The platform's {role.value}."
            )
        except AlreadyExists:
            pass  # made before (or by another replica just now)
        if not templates.template(PLATFORM, slug)[1]:
            try:
                templates.add_version(PLATFORM, slug, prompt, "", {"max_tokens": 4096}, {}, "swarm")
            except IntegrityError:
                pass  # another replica numbered it first
        if _deployed(templates, role) is None:
            deployments.deploy(PLATFORM, "swarm", slug, 1, 100)
            log.info("platform agent template deployed", extra={"slug": slug, "agent_type": role.value})


def _deployed(templates: TemplateStore, role: AgentRole) -> Deployment | None:
    def read(conn: Connection) -> Deployment | None:
        return latest_deployment(conn, PLATFORM, role.value)

    return templates.db.transaction(read, write=False)
