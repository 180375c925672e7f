"""python -m swarmagent.warm: a guest started before it has an agent.

Starting Python and importing the agent runtime (gRPC, OpenTelemetry, the
anthropic SDK) is most of a sandbox's spawn-to-ready time, and a confined
guest cannot be forked from a shared warm process (it would share that
process's namespaces and uid with every other guest). So vmhost starts
whole sandboxes ahead of demand, each running this: it imports everything,
says "warm" on stdout, and waits for its assignment on stdin — one JSON
object, the guest's environment. Then it becomes that guest
(`swarmagent.guest`), its stdout joining its stderr (the guest log).
Nothing is opened or started before the assignment, so a sandbox that is
never used holds no connection and no secret.
"""

from __future__ import annotations

import json
import os
import sys

import swarmagent.guest
import swarmagent.runtime  # noqa: F401 - warm for SWARM_AGENT_WORK=swarmagent.runtime:work

READY = "warm"


def main() -> int:
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line:
        return 0  # never assigned: vmhost is shrinking its pool or going away
    env = json.loads(line)
    os.dup2(2, 1)  # from here on stdout is the guest log too
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    return swarmagent.guest.main()


if __name__ == "__main__":
    sys.exit(main())
