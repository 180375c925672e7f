"""Events settings: environment variables SWARM_EVENTS_*."""

from __future__ import annotations

from swarmcommon.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("EVENTS")

    database_url: str = "sqlite:///var/events.db"
    listen_address: str = "127.0.0.1:50053"
    # Networks webhook URLs may resolve into although they are private,
    # loopback or link-local (comma-separated CIDRs), e.g. "127.0.0.0/8" for
    # tests or an on-prem range. Empty: only public addresses.
    webhook_allow_networks: str = ""
