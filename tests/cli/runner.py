"""Running `swarm` in-process with typer's CliRunner, as a given tenant."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from swarmcli.main import app


@dataclass
class Swarm:
    url: str
    tenant: str
    api_key: str
    admin_token: str
    # XDG_CONFIG_HOME: no config file of the machine's user leaks in.
    config_home: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def env(self, **overrides: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "SWARM_URL": self.url,
            "SWARM_API_KEY": self.api_key,
            "SWARM_ADMIN_TOKEN": self.admin_token,
            "SWARM_CONFIG": None,
            "XDG_CONFIG_HOME": str(self.config_home),
            "COLUMNS": "200",
        }
        env.update(overrides)
        return env

    def run(self, *args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
        return self.runner.invoke(app, list(args), env=env if env is not None else self.env(), input=input)

    def __call__(self, *args: str, code: int = 0) -> Result:
        """Run and require exit `code`; the result's stdout/stderr for the asserts."""
        result = self.run(*args)
        assert result.exit_code == code, (
            f"swarm {' '.join(args)} exited {result.exit_code}, expected {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
        )
        return result

    def json(self, *args: str) -> Any:
        """Run with --json and parse stdout."""
        return json.loads(self(*args, "--json").stdout)
