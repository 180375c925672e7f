"""Where the CLI finds the gateway and its credentials, how it fails, and the
operator's admin commands."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.cli.runner import Swarm
from tests.support.mesh import Mesh


def test_help_is_everywhere(swarm: Swarm) -> None:
    top = swarm("--help").stdout
    for command in (
        "projects",
        "project",
        "tickets",
        "dlq",
        "webhooks",
        "events",
        "usage",
        "trace",
        "agents",
    ):
        assert command in top
    assert "SWARM_URL" in top
    for group in (["project", "create"], ["tickets", "edit"], ["admin", "tenants", "create"], ["up"]):
        assert "Usage: swarm " + " ".join(group) in swarm(*group, "--help").stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["projects", "--no-such-flag"], id="unknown-flag"),
        pytest.param(["tickets", "ls", "--limit", "many"], id="not-a-number"),
        pytest.param(["no-such-command"], id="unknown-command"),
        pytest.param(["tickets", "show"], id="missing-argument"),
    ],
)
def test_a_bad_invocation_exits_2_and_says_why(swarm: Swarm, args: list[str]) -> None:
    result = swarm(*args, code=2)
    assert result.stdout == ""
    assert any(word in result.stderr for word in ("No such", "Invalid value", "Missing argument"))


def test_an_api_error_exits_1_with_the_gateways_message(swarm: Swarm) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    result = swarm("tickets", "show", missing, code=1)
    assert result.stderr.startswith("error: 404 NOT_FOUND:")
    assert missing in result.stderr and "Traceback" not in result.output
    # A body the gateway refuses names the field.
    result = swarm("tickets", "edit", missing, "--priority", "5", "--stage", "no-such-role", code=1)
    assert "400" in result.stderr or "422" in result.stderr
    assert "stages" in result.stderr


def test_a_wrong_key_is_the_gateways_401(swarm: Swarm) -> None:
    result = swarm.run("projects", env=swarm.env(SWARM_API_KEY="sk_not_a_key"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 401 UNAUTHENTICATED")


def test_an_unreachable_gateway_is_one_line_naming_the_url(swarm: Swarm) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    url = f"http://127.0.0.1:{port}"
    result = swarm.run("projects", env=swarm.env(SWARM_URL=url))
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot reach the gateway at {url}: connection refused\n"


def test_without_an_api_key_it_is_a_usage_error(swarm: Swarm) -> None:
    result = swarm.run("projects", env=swarm.env(SWARM_API_KEY=None))
    assert result.exit_code == 2
    assert "no API key" in result.stderr


def test_flags_beat_the_environment_which_beats_the_config_file(swarm: Swarm, tmp_path: Path) -> None:
    config = swarm.config_home / "swarm" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{swarm.url}"\napi_key = "{swarm.api_key}"\n')
    # The default config file alone is enough.
    only_file = swarm.env(SWARM_URL=None, SWARM_API_KEY=None)
    assert swarm.run("projects", "--json", env=only_file).exit_code == 0
    # The environment wins over the file...
    env_wins = swarm.env(SWARM_URL=None, SWARM_API_KEY="sk_from_env")
    assert swarm.run("projects", env=env_wins).stderr.startswith("error: 401")
    # ...and a flag over the environment.
    flag = swarm.run("--api-key", swarm.api_key, "projects", "--json", env=env_wins)
    assert flag.exit_code == 0 and json.loads(flag.stdout)["items"] == []
    # SWARM_CONFIG names another file; a broken one is a usage error naming it.
    other = tmp_path / "other.toml"
    other.write_text("url = 12\n")
    broken = swarm.run("projects", env=swarm.env(SWARM_CONFIG=str(other)))
    assert broken.exit_code == 2 and str(other) in broken.stderr.replace("\n", "").replace("│", "")


def test_admin_creates_and_lists_tenants_and_keys(swarm: Swarm, mesh: Mesh) -> None:
    created = swarm("admin", "tenants", "create", "globex", "--plan", "enterprise")
    assert "tenant globex created on the enterprise plan" in created.stdout
    listed = swarm.json("admin", "tenants", "ls")
    assert {"globex", swarm.tenant} <= {t["id"] for t in listed["items"]}
    table = swarm("admin", "tenants", "ls").stdout
    assert "globex" in table and "enterprise" in table
    key = swarm("admin", "keys", "create", "globex", "--name", "ci").stdout.strip().splitlines()[-1]
    # The printed secret works as an API key.
    as_globex = swarm.run("projects", "--json", env=swarm.env(SWARM_API_KEY=key))
    assert as_globex.exit_code == 0, as_globex.stderr
    keys = swarm.json("admin", "keys", "ls", "globex")
    assert [k["display_name"] for k in keys["items"]] == ["ci"]
    # Admin commands need the admin token; a wrong one is the gateway's refusal.
    no_token = swarm.run("admin", "tenants", "ls", env=swarm.env(SWARM_ADMIN_TOKEN=None))
    assert no_token.exit_code == 2 and "no admin token" in no_token.stderr
    wrong = swarm.run("admin", "tenants", "ls", env=swarm.env(SWARM_ADMIN_TOKEN="x" * 32))
    assert wrong.exit_code == 1 and wrong.stderr.startswith("error: 401")
