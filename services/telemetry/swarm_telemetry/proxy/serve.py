"""The proxy served by uvicorn on its own thread inside the telemetry
process, on a socket bound before the thread starts (so the port is known
at once, and shared between worker processes with SO_REUSEPORT).

HTTPS with the workload's certificate (tls_dir) unless in insecure dev
mode; a rotated certificate is served from the next handshake on
(swarmcommon.tls.https_server_context), like the gRPC listeners.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import httpx
import uvicorn

from swarm_telemetry.config import Settings
from swarm_telemetry.ledger import UsageLedger
from swarm_telemetry.proxy.app import LlmProxy
from swarm_telemetry.proxy.budget import CostHolds
from swarm_telemetry.proxy.exchange import Services, Upstream
from swarm_telemetry.proxy.history import OutputHistory
from swarm_telemetry.proxy.settle import Settler
from swarm_telemetry.proxy.tickets import TicketGate
from swarmcommon.agenttoken import TokenVerifier
from swarmcommon.clock import Clock
from swarmcommon.db import Database
from swarmcommon.security import InsecureConfig, ServerSecurity, client_tls
from swarmcommon.tls import TlsFiles, https_server_context

T = TypeVar("T")
STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class ProxySettings:
    listen_address: str
    upstream_url: str
    upstream_api_key: str
    upstream_timeout_seconds: float
    history_calls: int
    threads: int
    settle_retry_seconds: float
    # How long stopping waits for running calls to finish and settle.
    grace_seconds: float = 10.0
    reuse_port: bool = False
    tls: TlsFiles | None = None


def _bind(address: str, reuse_port: bool) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)  # connections wait in the backlog until uvicorn serves
    return sock


class ProxyServer:
    def __init__(
        self,
        settings: ProxySettings,
        verifier: TokenVerifier,
        ledger: UsageLedger,
        db: Database,
        holds: CostHolds | None,
        clock: Clock,
        tickets: TicketGate | None = None,
    ) -> None:
        self.settings = settings
        self.holds = holds
        self.tickets = tickets
        self.pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="llm-proxy")
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=10.0),
            limits=httpx.Limits(
                max_connections=4 * settings.threads, max_keepalive_connections=settings.threads
            ),
        )
        services = Services(
            upstream=Upstream(settings.upstream_url, settings.upstream_api_key, self.http),
            history=OutputHistory(db, settings.history_calls),
            holds=holds,
            settler=Settler(ledger, holds),
            clock=clock,
            run=self._run,
            settle_retry_seconds=settings.settle_retry_seconds,
            tickets=tickets,
        )
        self.proxy = LlmProxy(verifier, services, self.http.aclose, drain_seconds=settings.grace_seconds)
        self.socket = _bind(settings.listen_address, settings.reuse_port)
        self.port: int = self.socket.getsockname()[1]
        files = settings.tls
        # HTTPS with the workload's certificate, following its rotation.
        tls: dict[str, Any] = (
            {"ssl_context_factory": lambda config, default: https_server_context(files)} if files else {}
        )
        config = uvicorn.Config(self.proxy.app, log_config=None, access_log=False, lifespan="on", **tls)
        self.server = uvicorn.Server(config)
        self.scheme = "https" if settings.tls else "http"
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="llm-proxy", daemon=True
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    def start(self) -> ProxyServer:
        self._thread.start()
        if not self.proxy.ready.wait(STARTUP_SECONDS):
            raise RuntimeError(f"the LLM proxy did not start on port {self.port}")
        return self

    def stop(self) -> None:
        """Stop accepting, let running calls finish and settle (up to the grace period), then close."""
        grace = self.settings.grace_seconds
        self.server.config.timeout_graceful_shutdown = max(int(grace), 1)
        self.server.should_exit = True
        self._thread.join(timeout=2 * grace + 10)
        self.pool.shutdown(wait=False)
        self.socket.close()
        if self.holds is not None:
            self.holds.close()
        if self.tickets is not None:
            self.tickets.close()


def start_llm_proxy(
    settings: Settings, security: ServerSecurity, ledger: UsageLedger, db: Database, clock: Clock
) -> ProxyServer | None:
    """The proxy telemetry's settings ask for, serving; None when it is off.

    It verifies agent tokens with the same verifier (keys and revocation)
    as telemetry's gRPC listeners."""
    if not settings.llm_proxy_listen_address:
        return None
    if security.verifier is None:
        raise InsecureConfig(
            "SWARM_TELEMETRY_AGENT_TOKEN_PUBLIC_KEYS is required for the LLM proxy: "
            "it authenticates every call by the agent token vmhost signs"
        )
    holds = CostHolds(settings.quota_target, tls=client_tls(settings)) if settings.quota_target else None
    tickets = (
        TicketGate(settings.ticketing_target, settings.quota_target, db, tls=client_tls(settings))
        if settings.ticketing_target
        else None
    )
    proxy = ProxySettings(
        listen_address=settings.llm_proxy_listen_address,
        upstream_url=settings.llm_proxy_upstream_url,
        upstream_api_key=settings.llm_proxy_upstream_api_key.get_secret_value(),
        upstream_timeout_seconds=settings.llm_proxy_upstream_timeout_seconds,
        history_calls=settings.llm_proxy_history_calls,
        threads=settings.llm_proxy_threads,
        settle_retry_seconds=settings.llm_proxy_settle_retry_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
        reuse_port=settings.reuse_port,
        tls=security.tls,
    )
    return ProxyServer(proxy, security.verifier, ledger, db, holds, clock, tickets).start()
