"""Ticketing settings: environment variables SWARM_TICKETING_*."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from swarm_ticketing.fairness import parse_weights
from swarm_ticketing.gitcredentials import FileCredentials
from swarm_ticketing.marketplace import PromptSealer
from swarm_ticketing.repositories import parse_prefixes
from swarmcommon.errors import InvalidArgument
from swarmcommon.gitrepos import local_segments
from swarmcommon.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("TICKETING")
    # The port guests reach: TLS without client certificates, an agent token
    # on every call (swarmcommon.authz). Empty: guests cannot reach this service.
    agent_listen_address: str = ""

    database_url: str = "sqlite:///var/ticketing.db"
    listen_address: str = "127.0.0.1:50051"
    lease_seconds: float = Field(default=900.0, ge=1, le=7200)
    max_failures: int = Field(default=3, ge=1, le=100)
    # The quota service (host:port). Empty: no ticket quota is enforced, as
    # in the embedded single-tenant demo.
    quota_target: str = ""
    # The events service (host:port) the outbox relay ships to. Empty: events
    # stay in the outbox table.
    events_target: str = ""
    # vmhost (host:port), whose ListRevokedAgents is polled every second so
    # a terminated agent's token stops working before it expires
    # (swarmcommon.revocation). Empty: tokens work until they expire.
    vmhost_target: str = ""
    # Parked ClaimTickets (long polls) look at the database when a ticket
    # they may take becomes ready and, those of one filter (tenant, role,
    # project) together, at least this often: the backstop for a wake that
    # never came (a NOTIFY lost while the listener reconnected).
    claim_recheck_seconds: float = Field(default=5.0, gt=0, le=300)
    # How many claims run at once (each holds a database connection); the
    # rest wait, served by deficit round-robin over tenants
    # (swarm_ticketing.fairness).
    claim_slots: int = Field(default=8, ge=1, le=256)
    # Tenants' shares of the claim slots, "tenant=weight,…" (1 to 1000;
    # default 1): e.g. a paying plan's tenants 4.
    tenant_weights: str = ""
    # How often the reaper looks for expired leases nobody rescued; 0 disables.
    reaper_interval_seconds: float = Field(default=10.0, ge=0)
    # A lease whose heartbeats report no progress this long is released as
    # stale (a hung agent), a failure counted; 0 never (the seed: 30 min).
    stale_lease_minutes: float = Field(default=30.0, ge=0, le=24 * 60)
    # The size of the lessons section an agent's prompt gets (seed §13), in
    # tokens (about 4 characters each).
    lessons_token_budget: int = Field(default=800, ge=100, le=8000)
    # How long a request_id is remembered (AIP-155): a retry arrives within
    # seconds or minutes; a day also covers a client's own slow retry loop.
    request_retention_seconds: float = Field(default=86400.0, ge=60)
    # Which git repositories each tenant's projects may name (checked when a
    # project is created; swarm_ticketing.repositories):
    # "tenant=prefix,prefix;tenant=prefix", a prefix being host[:port]/path/,
    # e.g. "acme=github.com/acme/,git.acme.example/". A tenant not listed may
    # name no remote repository.
    repository_prefixes: str = ""
    # Local repositories (an absolute path or file:// URL): refused when empty;
    # with a directory, a tenant's projects may name only repositories under
    # <this>/<tenant_id>/ (a single-host install, the demo). vmhost's setting
    # of the same name lets guests clone them.
    local_repository_root: str = ""
    # Credentials for tenants' https repositories, handed to the agent that
    # claims a ticket of such a repository (swarm_ticketing.gitcredentials):
    # a JSON file the operator writes. Empty: guests get none.
    git_credentials_file: str = ""
    # A checkpoint snapshot of a project's base branch every this many merged
    # tickets (swarm_ticketing.snapshots); 0: none.
    checkpoint_every: int = Field(default=5, ge=0, le=10_000)
    # The template marketplace's key(s) sealing paid prompts at rest
    # (swarm_ticketing.marketplace): comma-separated Fernet keys, the first
    # sealing new prompts and every one opening (rotation), given here or in
    # a file (one key a line) — e.g. a Kubernetes Secret mounted read-only.
    # Make one with `python -c "from cryptography.fernet import Fernet;
    # print(Fernet.generate_key().decode())"`. Empty: paid templates cannot
    # be published (FAILED_PRECONDITION); free ones can.
    marketplace_key: SecretStr = SecretStr("")
    marketplace_key_file: str = ""

    def marketplace_keys(self) -> list[str]:
        keys = self.marketplace_key.get_secret_value().split(",")
        if self.marketplace_key_file:
            keys += Path(self.marketplace_key_file).read_text().split()
        return [k.strip() for k in keys if k.strip()]

    @field_validator("repository_prefixes")
    @classmethod
    def _prefixes(cls, value: str) -> str:
        parse_prefixes(value)
        return value

    @field_validator("tenant_weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        parse_weights(value)
        return value

    @field_validator("git_credentials_file")
    @classmethod
    def _credentials(cls, value: str) -> str:
        FileCredentials.load(value)  # refused at start, naming the bad entry
        return value

    @model_validator(mode="after")
    def _marketplace_keys(self) -> Settings:
        try:  # refused at start, naming the setting
            PromptSealer(self.marketplace_keys())
        except (OSError, InvalidArgument) as exc:
            raise ValueError(f"marketplace_key / marketplace_key_file: {exc}") from None
        return self

    @field_validator("local_repository_root")
    @classmethod
    def _local_root(cls, value: str) -> str:
        if value:
            local_segments(value)
        return value
