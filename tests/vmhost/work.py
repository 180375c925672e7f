"""Work functions for guests started by vmhost tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from swarmagent.client import ClaimedTicket
from swarmagent.selfcheck import listen


def slow(claimed: ClaimedTicket) -> dict[str, Any]:
    """Long enough to be killed in the middle of."""
    time.sleep(3)
    return {"done_by": "guest"}


_listening: list[int] = []


def hostile(claimed: ClaimedTicket) -> dict[str, Any]:
    """The hostile program (hostile.py), run from inside this guest as its
    work: what each of its attempts saw is the ticket's result. This guest
    listens on the peers' port meanwhile (and after: they may still probe)."""
    if not _listening:
        _listening.append(int(os.environ["HOSTILE_PEER_PORT"]))
        listen(_listening[0])
    # The child finds the runtime as this guest did: its site directories
    # (their .pth files included) and PYTHONPATH.
    sites = [p for p in sys.path if p.endswith("site-packages")]
    boot = (
        "import runpy, site, sys\n"
        "for d in sys.argv[2:]: site.addsitedir(d)\n"
        "sys.argv = [sys.argv[1], '--once']\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    program = [sys.executable, "-c", boot, str(Path(__file__).with_name("hostile.py")), *sites]
    done = subprocess.run(program, capture_output=True, text=True, timeout=120, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("HOSTILE ")), None)
    if line is None:
        raise RuntimeError(f"the hostile program reported nothing: {done.stderr[-500:]}")
    return {"ticket": claimed.id, "report": json.loads(line.removeprefix("HOSTILE "))}
