"""python -m swarmagent.restorable <file>: a guest that may be snapshotted while it waits.

The gvisor driver checkpoints one sandbox running this (the runtime
imported, nothing opened, no secret held) and restores a copy of it for
every agent. A restored copy has no pipe of vmhost's to read, so it waits
for its assignment in a file: `<file>`, which vmhost writes into the
guest's work directory (mode 0600, owned by the guest's uid) before the
copy is restored, holding the guest's environment as one JSON object. The
guest deletes it once read (it holds the agent's token), makes its
randomness its own (every copy starts from the same memory: Python's
`random`, which OpenTelemetry draws trace and span ids from, would repeat
across guests), and becomes `swarmagent.guest` like a warm guest of the
netns driver. Nothing before the assignment opens a connection or draws
from a TLS library's generator, so no such state is shared between copies.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

# Imported before the snapshot, so restored guests have them: the span
# exporter the guest sets up (swarmcommon.telemetry imports it late), the
# guest program and the runtime (swarmagent.warm imports both), and the work
# wrapper of restored guests (their first ticket's vm.restore span).
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401

import swarmagent.guest
import swarmagent.vm  # noqa: F401
from swarmagent.warm import READY

POLL_SECONDS = 0.005


def wait_for(path: Path) -> dict[str, str]:
    """The assignment once it is there (vmhost renames it into place whole), deleted."""
    while True:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            time.sleep(POLL_SECONDS)
            continue
        path.unlink()
        return {str(k): str(v) for k, v in json.loads(raw).items()}


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m swarmagent.restorable <assignment file>\n")
        return 2
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    env = wait_for(Path(sys.argv[1]))
    random.seed(os.urandom(32))
    os.dup2(2, 1)  # stdout joins the guest log, as for any guest
    os.environ.clear()
    os.environ.update(env)
    return swarmagent.guest.main()


if __name__ == "__main__":
    sys.exit(main())
