"""Work functions for guests started by vmhost tests."""

from __future__ import annotations

import time
from typing import Any

from swarmagent.client import ClaimedTicket


def slow(claimed: ClaimedTicket) -> dict[str, Any]:
    """Long enough to be killed in the middle of."""
    time.sleep(3)
    return {"done_by": "guest"}
