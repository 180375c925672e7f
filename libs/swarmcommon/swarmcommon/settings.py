"""Settings every service shares; each service subclasses with its prefix.

class Settings(ServiceSettings):
    model_config = service_config("TICKETING")   # SWARM_TICKETING_*
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def service_config(service: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"SWARM_{service.upper()}_", extra="ignore")


class ServiceSettings(BaseSettings):
    # Embedded SQLite by default; a postgresql+psycopg:// URL scales out.
    database_url: str = "sqlite:///var/swarm.db"
    listen_address: str = "127.0.0.1:50051"
    migrate_on_start: bool = True
    log_level: str = "INFO"
    # Handler threads; each in-flight RPC holds one, so size for the number
    # of agents that call at once.
    grpc_max_workers: int = Field(default=128, ge=1, le=4096)
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    # Seconds a SIGTERM waits for in-flight RPCs before cancelling them.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Server processes sharing the listen address (SO_REUSEPORT). Python runs
    # one process's handlers on one core; more workers use more cores.
    workers: int = Field(default=1, ge=1, le=64)
    # Set by the supervisor for its children.
    worker_index: int = Field(default=0, ge=0)
    reuse_port: bool = False
    # Mesh security (see swarmcommon.security): the directory holding this
    # workload's tls.crt, tls.key and ca.crt (a cert-manager Secret's layout).
    tls_dir: str = ""
    trust_domain: str = "swarm.local"
    # Plaintext, and every caller trusted: only for a development laptop.
    insecure_dev: bool = False
    # gRPC server reflection (for grpcurl), off unless asked for.
    reflection: bool = False
    # Comma-separated Ed25519 public keys (PEM) that sign agent tokens; more
    # than one while vmhost's key is being rotated.
    agent_token_public_keys: str = ""
    # Prometheus series on GET /metrics over HTTP at this port, on the host of
    # listen_address (swarmcommon.metrics); 0 picks a free port (tests).
    # Worker N of `workers` serves on metrics_port + N.
    metrics_port: int = Field(default=9464, ge=0, le=65535)

    def worker_metrics_port(self) -> int:
        """This process's metrics port (each worker counts only its own calls)."""
        return self.metrics_port + self.worker_index if self.metrics_port else 0

    def env_prefix(self) -> str:
        return str(self.model_config.get("env_prefix", "SWARM_"))
