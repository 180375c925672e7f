"""The offline demo's model: deterministic answers in the shape the agent
runtime asks for, served by the local Messages-API server (the agents use
the real `anthropic` SDK and cannot tell).

Coders get one new module per ticket (an ensemble's attempts three versions
of it); reviewers approve what they see; the judge of an ensemble takes the
attempt with the most added lines and no TODO, and says so. The
ticket named POISON has a broken spec in its description (BROKEN_SPEC): while
it does, it gets prose instead of JSON, so its stage fails like a confused
model's would and the ticket is dead-lettered; once the operator fixes the
description (PATCH /api/tickets/{id}) and redrives it, it is answered like
any other.
"""

from __future__ import annotations

import json
import re
from typing import Any

from swarmagent.runtime import slug
from swarmdemo.canary import CANARY_MARK
from swarmdemo.messages_server import Reply, request_text

POISON = "Migrate legacy billing schema"
# The poison ticket's description, and the fix an operator makes (PATCH /api/tickets/{id}).
BROKEN = "NOT NUL;"
BROKEN_SPEC = f"Line 12: ALTER TABLE billing ADD COLUMN cents INTEGER {BROKEN}"
FIXED_SPEC = BROKEN_SPEC.replace(BROKEN, "NOT NULL;")
REVIEWER_MARK = "code reviewer"  # in the platform's reviewer template
JUDGE_MARK = "judge of several attempts"  # in the platform's judge template
ATTEMPT = re.compile(r"^(.*) \(attempt (\d+) of \d+\)$")
SECTION = re.compile(r"^## Attempt (\d+) .*?$(.*?)(?=^## Attempt |\Z)", re.MULTILINE | re.DOTALL)


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system", "")
    return system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)


class DemoModel:
    """A Messages-API responder (see MessagesServer)."""

    def __call__(self, body: dict[str, Any]) -> Reply:
        system = _system_text(body)
        text = request_text(body)
        match = re.search(r"^Ticket: (.+)$", text, re.MULTILINE)
        ticket = match.group(1).strip() if match else "work"
        if REVIEWER_MARK in system:
            added = len(re.findall(r"^\+[^+]", text, re.MULTILINE))
            verdict = {
                "approve": True,
                "comments": f"Reviewed {added} added lines for '{ticket}': looks good.",
            }
            return Reply(json.dumps(verdict), cache_read_input_tokens=len(system) // 4)
        if JUDGE_MARK in system:
            return Reply(json.dumps(_judge(text)))
        attempt = ATTEMPT.match(ticket)
        if attempt and CANARY_MARK not in system:
            return Reply(json.dumps(_new_module(attempt.group(1), int(attempt.group(2)))))
        if CANARY_MARK in system:  # the canary template asks for a style this model cannot do
            return Reply(f"Sure! I added a friendly helper for '{ticket}'.")
        if BROKEN in text:  # the ticket's description, until an operator fixes it
            return Reply("I cannot do this: the spec has a syntax error on line 12 (NOT NUL).")
        return Reply(json.dumps(_new_module(ticket)), cache_creation_input_tokens=len(system) // 4)


def _judge(text: str) -> dict[str, Any]:
    """Score each attempt's diff: added lines, minus a TODO's worth."""
    scores = {}
    for number, diff in SECTION.findall(text):
        added = len(re.findall(r"^\+[^+]", diff, re.MULTILINE))
        scores[int(number)] = added - (10 if "TODO" in diff else 0)
    best = max(scores, key=lambda n: (scores[n], -n))
    others = ", ".join(f"attempt {n}: {s}" for n, s in sorted(scores.items()) if n != best)
    return {
        "choice": str(best),
        "rationale": (
            f"Attempt {best} is the most complete (score {scores[best]}: added lines, no TODO); {others}."
        ),
    }


def _new_module(ticket: str, attempt: int = 0) -> dict[str, Any]:
    name = slug(ticket).replace("-", "_")
    body = f"    return {ticket!r}\n"
    if attempt == 1:
        body = f"    # TODO: handle the empty case\n{body}"
    elif attempt == 2:
        body = f"    if not {ticket!r}:\n        raise ValueError('empty')\n{body}"
    content = f'"""{ticket}."""\n\n\ndef {name}() -> str:\n    """Done by a Swarm agent."""\n{body}'
    return {"summary": f"Implement {ticket}", "files": [{"path": f"src/{name}.py", "content": content}]}
