"""Quota settings: environment variables SWARM_QUOTA_*."""

from __future__ import annotations

from swarmcommon.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("QUOTA")

    database_url: str = "sqlite:///var/quota.db"
    listen_address: str = "127.0.0.1:50052"
    # HMAC key for API-key hashes. Set a long random value in production (a
    # Secret): with it, a stolen database cannot even be brute-forced offline.
    api_key_pepper: str = "swarm-dev-pepper-change-me"
