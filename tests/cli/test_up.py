"""`swarm up`: the whole local mesh as separate processes on mutual TLS,
driven by the `swarm` command itself (agents too), stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


def _swarm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarmcli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_up_runs_the_mesh_until_ctrl_c_and_agents_can_be_spawned_and_stopped(tmp_path: Path) -> None:
    workdir = tmp_path / "mesh"
    up = subprocess.Popen(
        [sys.executable, "-m", "swarmcli", "up", "--workdir", str(workdir), "--tenant", "acme"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: list[str] = []
    assert up.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(up.stdout or []), daemon=True)
    reader.start()
    try:
        eventually(
            lambda: up.poll() is None and any("the mesh is up" in line for line in lines),
            timeout=180,
            interval=0.2,
            what=f"swarm up ready; so far: {lines}",
        )
        exports = dict(
            line.removeprefix("export ").strip().split("=", 1) for line in lines if line.startswith("export ")
        )
        assert set(exports) == {"SWARM_URL", "SWARM_ADMIN_TOKEN", "SWARM_API_KEY"}
        assert any(f"gateway: {exports['SWARM_URL']}" in line for line in lines)
        assert any(f"admin token: {exports['SWARM_ADMIN_TOKEN']}" in line for line in lines)
        env = {**os.environ, **exports, "XDG_CONFIG_HOME": str(tmp_path), "COLUMNS": "200"}

        tenants = json.loads(_swarm(env, "admin", "tenants", "ls", "--json").stdout)
        assert [t["id"] for t in tenants["items"]] == ["acme"]
        assert json.loads(_swarm(env, "projects", "--json").stdout)["items"] == []

        spawned = _swarm(env, "agents", "spawn", "--role", "coder")
        assert spawned.returncode == 0, spawned.stderr
        agent_id = spawned.stdout.split()[1]
        assert f"agent {agent_id} (coder) is starting" in spawned.stdout
        listed = _swarm(env, "agents", "ls").stdout
        assert agent_id in listed and "coder" in listed
        stopped = _swarm(env, "agents", "stop", agent_id)
        assert f"agent {agent_id} is terminated" in stopped.stdout
        gone = json.loads(_swarm(env, "agents", "ls", "--state", "terminated", "--json").stdout)
        assert [a["id"] for a in gone["items"]] == [agent_id]
        assert json.loads(_swarm(env, "agents", "ls", "--json").stdout)["items"] == []

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        reader.join(timeout=10)
        for service in ("quota", "telemetry", "events", "ticketing", "gateway", "vmhost"):
            assert any(line.startswith(f"{service} stopped (exit 0)") for line in lines), lines
        assert "Traceback" not in "".join(lines)
        # A second run may reuse the directory it made; another is refused.
        refused = _swarm(env, "up", "--workdir", str(REPO))
        assert refused.returncode == 2 and "not a `swarm up` directory" in refused.stderr
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
