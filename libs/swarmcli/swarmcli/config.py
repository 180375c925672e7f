"""Where the gateway is and who we are to it: a flag wins over the
environment (SWARM_URL, SWARM_API_KEY, SWARM_ADMIN_TOKEN; typer reads those
into the flags), which wins over the config file.

The config file is TOML, `~/.config/swarm/config.toml` (or $XDG_CONFIG_HOME,
or the path in SWARM_CONFIG / --config):

    url = "http://127.0.0.1:8080"
    api_key = "sk_..."
    admin_token = "..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmcli.client import usage_error

DEFAULT_URL = "http://127.0.0.1:8080"
KEYS = ("url", "api_key", "admin_token")


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "swarm" / "config.toml"


def read_config(path: Path | None) -> dict[str, str]:
    """The file's settings; a missing default file is no settings, a missing
    file the user named is a usage error (exit 2), as is a malformed one."""
    named = path is not None
    path = path or default_config_path()
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if named:
            raise usage_error(f"config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise usage_error(f"config file {path} cannot be read: {exc}") from None
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise usage_error(f"config file {path}: unknown key(s) {', '.join(unknown)} (known: {KEYS})")
    wrong = [k for k, v in raw.items() if not isinstance(v, str)]
    if wrong:
        raise usage_error(f"config file {path}: {', '.join(wrong)} must be a string")
    return {k: str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Settings:
    url: str
    api_key: str
    admin_token: str

    @classmethod
    def resolve(
        cls, url: str | None, api_key: str | None, admin_token: str | None, config: Path | None
    ) -> Settings:
        """Flags/env first (already merged by typer), then the file, then defaults."""
        file = read_config(config)
        resolved_url = (url or file.get("url") or DEFAULT_URL).rstrip("/")
        if not resolved_url.startswith(("http://", "https://")):
            raise usage_error(f"gateway URL {resolved_url!r} must start with http:// or https://")
        return cls(
            resolved_url, api_key or file.get("api_key", ""), admin_token or file.get("admin_token", "")
        )
