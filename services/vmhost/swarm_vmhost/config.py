"""vmhost settings: environment variables SWARM_VMHOST_*."""

from __future__ import annotations

from pydantic import Field, field_validator

from swarm_vmhost import firewall
from swarmcommon.settings import ServiceSettings, service_config


class Settings(ServiceSettings):
    model_config = service_config("VMHOST")
    # The port guests reach: TLS without client certificates, an agent token
    # on every call (swarmcommon.authz). Empty: guests cannot reach this service.
    agent_listen_address: str = ""

    database_url: str = "sqlite:///var/vmhost.db"
    listen_address: str = "127.0.0.1:50055"
    # The guests' bridge and its subnet; the bridge takes the first address
    # and is where guests reach the control plane.
    bridge_name: str = Field(default="swarm0", min_length=1, max_length=15)
    bridge_cidr: str = "10.88.0.0/24"
    # "gvisor", "netns", "qemu", "process", or empty for the strongest one
    # this host can run (gvisor, then netns, then process).
    default_driver: str = Field(default="", pattern="^(|gvisor|netns|qemu|process)$")
    # Services the guests and the monitor talk to (host:port as the *host*
    # sees them; guests are told the same ports on the bridge address).
    quota_target: str = ""
    ticketing_target: str = ""
    events_target: str = ""
    telemetry_target: str = ""
    # Agent credentials (swarmcommon.agenttoken): the Ed25519 key vmhost signs
    # each guest's token with (`key.pem` of swarmcommon.agenttoken.write_signing_key;
    # its public.pem goes in every service's AGENT_TOKEN_PUBLIC_KEYS), and how
    # long a token lives (renewed by every heartbeat). Required unless in
    # insecure dev mode, where guests get no token.
    agent_token_signing_key: str = ""
    agent_token_ttl_seconds: float = Field(default=900.0, ge=30, le=86400)
    # The ports guests call (TLS without client certificates, a token per
    # call), as the *host* sees them: the services' AGENT_LISTEN_ADDRESS.
    # They are other processes' settings, so vmhost is told rather than
    # guessing. Guests with a token are given only these; in insecure dev
    # mode an empty one falls back to the mesh target above.
    ticketing_agent_target: str = ""
    telemetry_agent_target: str = ""
    # The LLM proxy (telemetry's LLM_PROXY_LISTEN_ADDRESS) as a URL the *host*
    # reaches, e.g. "https://127.0.0.1:8443": given to every guest as
    # SWARM_LLM_BASE_URL, a loopback or any-address host becoming the bridge
    # address for guests in their own namespace ("{host}" works as in
    # guest_env). It replaces any SWARM_LLM_BASE_URL in guest_env. Guests call
    # the LLM only through it, with their agent token as the API key: no
    # provider key (*_API_KEY) is ever passed to a guest.
    llm_proxy_url: str = Field(default="", pattern=r"^(|https?://\S+)$")
    # The bridge's filter (swarm_vmhost.firewall). On the host, guests reach
    # only the ports they are told to call (vmhost's, ticketing's and
    # telemetry's agent ports, the LLM proxy) on the bridge address, plus
    # these TCP ports, "7000,7001". Beyond the host, only the allow-list:
    # "CIDR:PORT" (TCP) or "CIDR:PORT/udp", comma-separated, IPv4, e.g. the
    # git host "10.1.2.3/32:443"; link-local, 100.64.0.0/10 and metadata
    # addresses stay unreachable even when listed. Empty: no egress.
    guest_host_ports_extra: str = ""
    guest_egress_allow: str = ""
    # The CA certificate guests verify the services with, as a path the guest
    # can read. Empty: `ca.crt` in TLS_DIR.
    guest_ca_file: str = ""
    # Heartbeats: guests send one every interval; after `missed_heartbeats`
    # intervals of silence the agent is failed, its leases released and, when
    # the tenant is below its target, a replacement spawned.
    heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    missed_heartbeats: int = Field(default=3, ge=1)
    # How long a spawned guest may take to send its first heartbeat.
    start_timeout_seconds: float = Field(default=60.0, gt=0)
    # An agent that keeps heartbeating BUSY on one ticket for longer than this
    # is hung (its work loop is stuck while its heartbeat thread is fine): it
    # is healed like a silent one. Generous: real tickets take minutes.
    stale_ticket_seconds: float = Field(default=2 * 3600.0, gt=0)
    # A guest still heartbeating BUSY on a ticket whose lease it lost
    # (cancelled, released as stale, taken over) is told to stop by
    # ticketing at its next lease renewal; one still at it this long after
    # is terminated and replaced. A few renewal intervals.
    lease_lost_grace_seconds: float = Field(default=60.0, gt=0)
    monitor_interval_seconds: float = Field(default=2.0, ge=0)
    # The program each guest runs, and the work function it runs tickets with.
    guest_command: str = "python -m swarmagent.guest"
    # How many sandboxes of the standard guest program each hardened driver
    # keeps started ahead of demand (netns: swarm_vmhost.warmpool; gvisor:
    # restored from its snapshot, drivers/gvisor_ahead.py): a spawn takes one
    # instead of starting Python. 0: every guest starts cold (and gvisor
    # takes no snapshot).
    warm_guests: int = Field(default=2, ge=0, le=64)
    guest_work: str = ""
    # Local git repositories (paths, file://): empty, guests' git refuses them
    # (only https and ssh); with a directory, each guest may clone only under
    # <this>/<tenant_id>/ (SWARM_GIT_LOCAL_ROOT). Ticketing's setting of the
    # same name decides which projects may name them.
    local_repository_root: str = ""
    # Extra environment for every guest, "KEY=value;KEY=value" (e.g. the
    # project repository and the LLM endpoint for swarmagent.runtime:work);
    # "{host}" in a value becomes the host's address as the guest sees it.
    guest_env: str = ""
    workroot: str = "var/vmhost"
    # Disk check: over this share of the workroot's filesystem, old guest
    # logs are purged (seed §12).
    disk_purge_threshold: float = Field(default=0.9, gt=0, le=1)
    # The qemu driver: where `make guest-image` put the kernel and initramfs,
    # and how to run them. "kvm" where it really works; nested paravirtual
    # KVM (kvm_pvm) cannot boot stock kernels, so the default is TCG.
    guest_image_dir: str = "build/guest"
    qemu_accel: str = Field(default="tcg", pattern="^(tcg|kvm)$")
    # Per-guest limits (netns driver), in cgroups under cgroup_root.
    guest_memory_mb: int = Field(default=1024, ge=16)
    guest_cpus: float = Field(default=1.0, gt=0)
    guest_pids: int = Field(default=512, ge=8)
    cgroup_root: str = "/sys/fs/cgroup"
    # Where the cgroup controllers for these limits are missing, the netns
    # driver refuses guests; true runs them unlimited instead, and every such
    # agent (and ListDrivers) reports the limits it runs without.
    allow_unlimited_guests: bool = False
    # The largest count a tenant's target pool may ask of one role
    # (SetAgentPool; swarm_vmhost.pool). Quota's max_vms still bounds what runs.
    pool_max_per_role: int = Field(default=50, ge=0, le=10_000)

    @field_validator("guest_host_ports_extra")
    @classmethod
    def _ports(cls, value: str) -> str:
        firewall.parse_ports(value)
        return value

    @field_validator("guest_egress_allow")
    @classmethod
    def _egress(cls, value: str) -> str:
        firewall.parse_egress(value)
        return value
