"""Agent templates with canary deployments, and the marketplace, via the CLI."""

from __future__ import annotations

from pathlib import Path

from tests.cli.runner import Swarm

LISTING = """\
slug: {slug}
name: Security reviewer
description: Finds injection bugs
agent_type: security
category: security
tags: [owasp]
visibility: public
prompt: You review code for injection bugs.
"""


def test_templates_create_version_deploy_promote_and_roll_back(swarm: Swarm, tmp_path: Path) -> None:
    created = swarm("templates", "create", "strict-coder", "--agent-type", "coder", "--name", "Strict coder")
    assert "template strict-coder (coder) created" in created.stdout
    prompt = tmp_path / "prompt.txt"
    for text in ("Write small functions.", "Write small functions with docstrings."):
        prompt.write_text(text)
        swarm("templates", "add-version", "strict-coder", "-f", str(prompt))
    detail = swarm.json("templates", "show", "strict-coder")
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    shown = swarm("templates", "show", "strict-coder").stdout
    assert "Write small functions with docstrings." in shown

    stable = swarm.json("templates", "deploy", "strict-coder", "1")
    assert stable["rollout_percent"] == 100
    canary = swarm.json("templates", "deploy", "strict-coder", "2", "--percent", "20")
    assert canary["rollout_percent"] == 20 and canary["status"] in ("canary", "rolling")
    listed = swarm("templates", "deployments", canary["id"]).stdout
    assert canary["id"] in listed and canary["status"] in listed and "20%" in listed

    promoted = swarm("templates", "promote", canary["id"], "--percent", "50").stdout
    assert f"deployment {canary['id']} promoted" in promoted and "50%" in promoted
    rolled = swarm.json("templates", "rollback", canary["id"], "--reason", "too many failures")
    assert rolled["status"] == "rollback"

    missing = swarm("templates", "show", "no-such-template", code=1)
    assert missing.stderr.startswith("error: 404")


def test_templates_ls_says_when_the_gateway_cannot_list(swarm: Swarm) -> None:
    result = swarm.run("templates", "ls")
    if result.exit_code == 0:  # a gateway with GET /api/templates
        assert "templates" in result.stdout
    else:
        assert result.exit_code == 1
        assert "cannot list templates" in result.stderr and "swarm templates show SLUG" in result.stderr


def test_marketplace_publish_search_install_and_review(swarm: Swarm, tmp_path: Path) -> None:
    # Another tenant authors the listing (a tenant cannot install its own).
    swarm("admin", "tenants", "create", "author-co", "--plan", "pro")
    author_key = swarm("admin", "keys", "create", "author-co").stdout.strip().splitlines()[-1]
    spec = tmp_path / "listing.yaml"
    spec.write_text(LISTING.format(slug="sec-review"))
    published = swarm.run("marketplace", "publish", "-f", str(spec), env=swarm.env(SWARM_API_KEY=author_key))
    assert "published sec-review version 1 (public)" in published.stdout, published.stderr
    own = swarm.run("marketplace", "install", "sec-review", env=swarm.env(SWARM_API_KEY=author_key))
    assert own.exit_code == 1 and "is your own template" in own.stderr

    found = swarm.json("marketplace", "search", "injection")
    assert [x["slug"] for x in found["items"]] == ["sec-review"]
    table = swarm("marketplace", "search", "--category", "security").stdout
    assert "sec-review" in table and "Security reviewer" in table and "free" in table
    assert "no listing matches" in swarm("marketplace", "search", "nothing-like-this").stdout

    installed = swarm("marketplace", "install", "sec-review").stdout
    assert "installed sec-review version 1" in installed
    shown = swarm.json("marketplace", "show", "sec-review")
    assert shown["installation"]["slug"] == "sec-review"
    reviewed = swarm("marketplace", "review", "sec-review", "--rating", "4", "--title", "useful").stdout
    assert "reviewed sec-review: 4/5; now 4.0 from 1 reviews" in reviewed

    bad = swarm("marketplace", "install", "sec-review", "--config", "[1]", code=2)
    assert "must be a JSON object" in bad.stderr
    out_of_range = swarm("marketplace", "review", "sec-review", "--rating", "9", code=2)
    assert "--rating" in out_of_range.stderr and "less than or equal to 5" in out_of_range.stderr
