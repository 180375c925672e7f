"""Quota settings: environment variables SWARM_QUOTA_*."""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from swarmcommon.settings import ServiceSettings, service_config

MIN_PEPPER = 32
# Values that ship in this repository and are therefore public: the old
# built-in default and the placeholder of deploy/k8s/base/quota/secret.yaml.
_PUBLIC_MARKERS = ("placeholder", "change-me", "changeme", "swarm-dev-pepper")
_HOW = f"set it to a random secret of at least {MIN_PEPPER} characters (e.g. `openssl rand -hex 32`)"


def pepper_problem(pepper: str, dev_mode: bool) -> str | None:
    """Why `pepper` must not be used, or None.

    The rule: a set pepper is a real secret (long, and none of the public
    placeholders), in every mode. Only development mode may leave it empty;
    quota then generates one per database and keeps it there."""
    name = "SWARM_QUOTA_API_KEY_PEPPER"
    if not pepper:
        if dev_mode:
            return None
        return (
            f"{name} is not set: {_HOW}, from a Secret. Only a local development install may "
            "leave it empty, with SWARM_QUOTA_DEV_MODE=true (a pepper is then generated per database)"
        )
    if any(marker in pepper.lower() for marker in _PUBLIC_MARKERS):
        return f"{name} is a placeholder published with Swarm, not a secret: {_HOW}"
    if len(pepper) < MIN_PEPPER:
        return f"{name} is too short ({len(pepper)} < {MIN_PEPPER} characters): {_HOW}"
    return None


class Settings(ServiceSettings):
    model_config = service_config("QUOTA")

    database_url: str = "sqlite:///var/quota.db"
    listen_address: str = "127.0.0.1:50052"
    # HMAC key for API-key hashes, from a Secret: with it, a stolen database
    # cannot even be brute-forced offline. Changing it invalidates every key.
    api_key_pepper: str = ""
    # A local development install (the demo, the tests): an empty pepper is
    # then generated once per database instead of refused.
    dev_mode: bool = False

    @model_validator(mode="after")
    def _pepper_is_a_secret(self) -> Self:
        problem = pepper_problem(self.api_key_pepper, self.dev_mode)
        if problem is not None:
            raise ValueError(problem)
        return self
