"""A guest program for the LLM proxy tests: one call through the agent
runtime's own tracked LLM client (swarmagent.runtime.work.llm), built from
the environment vmhost gave it, exactly as a working agent builds it.

SWARM_TEST_KILL_AFTER_REPLY=1: the guest kills itself with SIGKILL the
moment the reply is back, before anything else. Otherwise it writes
answer.json (the reply and its own view of the LLM setup) in its working
directory and waits to be stopped."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from swarmagent.runtime import work

MODEL = "claude-sonnet-4-5"


def main() -> None:
    llm = work.llm(os.environ)
    reply = llm.create(
        model=MODEL, max_tokens=512, messages=[{"role": "user", "content": "Say done, from a guest."}]
    )
    if os.environ.get("SWARM_TEST_KILL_AFTER_REPLY"):
        os.kill(os.getpid(), signal.SIGKILL)
    answer = {
        "id": reply.id,
        "text": "".join(getattr(block, "text", "") for block in reply.content),
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": reply.usage.output_tokens,
        "through_proxy": llm.through_proxy,
        "base_url": str(llm.client.base_url),
    }
    tmp = Path("answer.json.tmp")
    tmp.write_text(json.dumps(answer))
    tmp.rename("answer.json")
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
