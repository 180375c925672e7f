"""The offline demo's model: deterministic answers in the shape the runtime
asks for, served by the local Messages-API server (the agents use the real
`anthropic` SDK and cannot tell).

Coders get one new module per ticket; reviewers approve what they see. The
ticket named in POISON gets prose instead of JSON while its spec is broken,
so its stage fails like a confused model's would and the ticket is
dead-lettered; once the demo "fixes the spec" (`fix_spec`) it is answered
like any other.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from swarmagent.messages_server import Reply, request_text
from swarmagent.runtime import slug

POISON = "Migrate legacy billing schema"
_spec_fixed = threading.Event()


def fix_spec() -> None:
    _spec_fixed.set()


def respond(body: dict[str, Any]) -> Reply:
    system = body.get("system", "")
    system = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
    text = request_text(body)
    match = re.search(r"^Ticket: (.+)$", text, re.MULTILINE)
    ticket = match.group(1).strip() if match else "work"
    if "code reviewer" in system:
        added = len(re.findall(r"^\+[^+]", text, re.MULTILINE))
        verdict = {"approve": True, "comments": f"Reviewed {added} added lines for '{ticket}': looks good."}
        return Reply(json.dumps(verdict), cache_read_input_tokens=len(system) // 4)
    if ticket == POISON and not _spec_fixed.is_set():
        return Reply("I cannot do this: the spec has a syntax error on line 12.")
    name = slug(ticket).replace("-", "_")
    content = (
        f'"""{ticket}."""\n\n\n'
        f"def {name}() -> str:\n"
        f'    """Done by a Swarm agent."""\n'
        f"    return {ticket!r}\n"
    )
    answer = {"summary": f"Implement {ticket}", "files": [{"path": f"src/{name}.py", "content": content}]}
    return Reply(json.dumps(answer), cache_creation_input_tokens=len(system) // 4)
