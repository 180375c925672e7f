"""Webhooks and the live event stream through the CLI, with a real receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from typer.testing import Result

from tests.cli.runner import Swarm
from tests.support.mesh import Mesh
from tests.support.receivers import Receiver, serve_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as rec:
        yield rec


def test_add_list_test_logs_and_rotate_a_webhook(swarm: Swarm, receiver: Receiver) -> None:
    added = swarm("webhooks", "add", receiver.url, "--event", "ticket.created", "--description", "ci")
    hook_id = added.stdout.split()[1]
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_") and receiver.url in added.stdout

    listed = swarm.json("webhooks", "ls")
    assert [(h["id"], h["url"], h["events"]) for h in listed["items"]] == [
        (hook_id, receiver.url, ["ticket.created"])
    ]
    assert hook_id in swarm("webhooks", "ls").stdout

    tested = swarm("webhooks", "test", hook_id).stdout
    assert "→ succeeded (HTTP 200" in tested
    receiver.wait_for(1)
    logs = swarm.json("webhooks", "logs", hook_id)
    assert [(a["test"], a["outcome"], a["response_status_code"]) for a in logs["items"]] == [
        (True, "succeeded", 200)
    ]
    assert "succeeded" in swarm("webhooks", "logs", hook_id).stdout

    rotated = swarm("webhooks", "rotate", hook_id, "--grace", "60").stdout
    new_secret = rotated.strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != secret

    swarm("webhooks", "rm", hook_id)
    missing = swarm("webhooks", "show", hook_id, code=1)
    assert missing.stderr.startswith("error: 404")


def test_a_webhook_the_gateway_refuses_says_why(swarm: Swarm) -> None:
    result = swarm("webhooks", "add", "https://example.invalid/hook", "--event", "no.such.event", code=1)
    assert result.stderr.startswith("error: 400") and "no.such.event" in result.stderr


def test_events_tail_follows_the_stream(swarm: Swarm, mesh: Mesh) -> None:
    # From before the project exists: whether the stream opens before the
    # tickets are created (live) or after (replayed), each arrives once.
    since = datetime.now(UTC).isoformat()
    tailed: list[Result] = []
    args = ("events", "tail", "--type", "ticket.created", "--since", since, "--count", "3", "--json")
    tail = threading.Thread(target=lambda: tailed.append(swarm(*args)))
    tail.start()
    with mesh.as_key(swarm.api_key) as api:  # not the CLI: one CliRunner at a time owns stdout
        spec = {"name": "streamed", "tickets": [{"key": k, "name": k.upper()} for k in "abc"]}
        created = api.post("/api/projects", json=spec).json()
    tail.join(timeout=30)
    assert not tail.is_alive()
    events = [json.loads(line) for line in tailed[0].stdout.splitlines()]
    assert [e["type"] for e in events] == ["ticket.created"] * 3
    assert {e["data"]["ticket_id"] for e in events} == {t["id"] for t in created["tickets"]}

    # For people: one line per event.
    lines = swarm("events", "tail", "--since", since, "--type", "ticket.created", "--count", "3").stdout
    shown = [line.split() for line in lines.splitlines()]
    assert [(words[2], words[3]) for words in shown] == [
        ("ticket.created", e["data"]["ticket_id"]) for e in events
    ]
    stored = swarm.json("events", "ls", "--type", "ticket.created")
    assert {e["id"] for e in stored["items"]} == {e["id"] for e in events}


def test_events_tail_with_a_bad_type_is_the_gateways_refusal(swarm: Swarm) -> None:
    result = swarm("events", "tail", "--type", "no.such.type", code=1)
    assert result.stderr.startswith("error: 400") and "no.such.type" in result.stderr
