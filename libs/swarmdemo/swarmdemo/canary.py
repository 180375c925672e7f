"""The demo's canary: the tenant's own coder template in two versions, the
second rolled out to 20 % of tickets. The second version's prompt asks for a
house style this demo's model cannot answer in (it replies in prose, which
fails the stage), so the canary's failures pile up until the tenth counted
outcome rolls it back automatically — and every later attempt, including
those of the canary's own tickets, runs the stable version again.

A batch of 40 coder-only tickets gives the canary enough tickets to judge
(about 8 of them land in its 20 %)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from swarmdemo.console import console

CANARY_MARK = "House style (canary):"
SLUG = "acme-coder"
BATCH = 40


def set_up_canary(api: httpx.Client) -> str:
    """v1 (the platform's coder prompt) for everyone, then v2 to 20 %; the deployment id."""
    platform = api.get("/api/templates/swarm-coder")
    platform.raise_for_status()
    prompt = platform.json()["versions"][-1]["prompt"]
    api.post(
        "/api/templates", json={"slug": SLUG, "agent_type": "coder", "name": "Acme coder"}
    ).raise_for_status()
    for text in (prompt, f"{prompt}\n{CANARY_MARK} answer in one friendly sentence, no JSON."):
        api.post(f"/api/templates/{SLUG}/versions", json={"prompt": text}).raise_for_status()
    api.post("/api/deployments", json={"slug": SLUG, "version": 1, "rollout_percent": 100}).raise_for_status()
    canary = api.post(
        "/api/deployments", json={"slug": SLUG, "version": 2, "rollout_percent": 20, "ladder": [20, 100]}
    )
    canary.raise_for_status()
    deployment: dict[str, Any] = canary.json()
    console.print(
        f"POST /api/deployments → {canary.status_code}: [bold]{SLUG} v2[/] canary at "
        f"{deployment['rollout_percent']} % (v1 for the rest; "
        "rolled back at >= 10 outcomes with > 30 % failures)"
    )
    return str(deployment["id"])


def submit_batch(api: httpx.Client, repository: Path) -> dict[str, Any]:
    spec = {
        "name": "helpers-batch",
        "description": "Small coder-only tickets: enough for the canary to be judged",
        "repository": str(repository),
        "base_branch": "main",
        "tickets": [
            {"key": f"h{i}", "name": f"Add helper {i:02d}", "stages": ["coder"]} for i in range(BATCH)
        ],
    }
    created = api.post("/api/projects", json=spec, headers={"Idempotency-Key": "demo-batch-1"})
    created.raise_for_status()
    console.print(f"POST /api/projects → {created.status_code}: [bold]helpers-batch[/] with {BATCH} tickets")
    body: dict[str, Any] = created.json()
    return body


class CanaryWatch:
    """Prints the canary deployment's counters when they change, and its fate."""

    def __init__(self, api: httpx.Client, deployment_id: str) -> None:
        self.api = api
        self.deployment_id = deployment_id
        self.seen: tuple[str, int, int] | None = None

    def __call__(self) -> None:
        d = self.api.get(f"/api/deployments/{self.deployment_id}").json()
        now = (d["status"], d["success_count"], d["failure_count"])
        if now == self.seen:
            return
        self.seen = now
        line = (
            f"  canary {SLUG} v2: {d['status']} at {d['rollout_percent']} % — "
            f"{d['success_count']} ok, {d['failure_count']} failed ({d['failure_rate'] * 100:.1f} % failures)"
        )
        if d["status"] == "rollback":
            line += " → [bold red]Auto-rollback[/]: every ticket back on v1"
        elif d["status"] in ("rolling", "full"):
            line += " → [bold green]promoted[/]"
        console.print(line)
