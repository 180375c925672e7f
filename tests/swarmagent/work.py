"""Work for agent processes started by these tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from swarmagent.client import ClaimedTicket


class Closing:
    """Work that holds something for the agent's lifetime (as the runtime
    holds its usage records) and says when it was let go."""

    def __call__(self, claimed: ClaimedTicket) -> dict[str, Any]:
        return {"done_by": "agent"}

    def close(self) -> None:
        Path(os.environ["SWARM_TEST_CLOSED_MARKER"]).write_text("closed")


closing = Closing()
