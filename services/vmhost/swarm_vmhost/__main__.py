"""python -m swarm_vmhost: settings -> server -> serve until SIGTERM.

With SWARM_VMHOST_WORKERS=N (N > 1) this process migrates the database once,
then supervises N server processes sharing the listen address.
"""

from __future__ import annotations

import sys

from swarm_vmhost import server
from swarm_vmhost.config import Settings
from swarmcommon.service import serve


def main() -> int:
    return serve("vmhost", Settings(), server.start, server.migrate)


if __name__ == "__main__":
    sys.exit(main())
