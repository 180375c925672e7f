"""The LLM proxy's test bench: real quota and telemetry servers (the proxy
served by telemetry on an ephemeral port), a recording upstream, agent
tokens signed by a real key, and guests that are the real `anthropic` SDK
pointed at the proxy with their agent token as the API key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import sqlalchemy as sa

from swarm.quota.v1 import quota_pb2 as qpb
from swarm_telemetry.domain import UsageRecord
from swarm_telemetry.proxy.serve import ProxyServer
from swarm_telemetry.tables import usage_records
from swarmcommon.agenttoken import AgentIdentity, TokenSigner, write_signing_key
from tests.llmproxy.upstream import Upstream
from tests.support.harness import QuotaHarness, TelemetryHarness, start_quota, start_telemetry

PLATFORM_KEY = "sk-ant-platform-key-never-for-guests"
MODEL = "claude-sonnet-4-5"
# claude-sonnet-4-5's published prices, in micro-dollars per token (= $ per million tokens).
INPUT, OUTPUT, CACHE_WRITE, CACHE_READ = 3, 15, 3.75, 0.30


@dataclass
class LlmBench:
    quota: QuotaHarness
    telemetry: TelemetryHarness
    upstream: Upstream
    signer: TokenSigner
    keys: Path

    @property
    def proxy(self) -> ProxyServer:
        proxy = self.telemetry.app.llm_proxy
        assert proxy is not None
        return proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def tenant(self, budget_usd_micros: int | None = None) -> str:
        tid = f"t-{uuid.uuid4().hex[:8]}"
        overrides = (
            [qpb.QuotaOverride(resource=qpb.RESOURCE_COST_USD_MONTH, limit=budget_usd_micros)]
            if budget_usd_micros is not None
            else []
        )
        self.quota.stub.CreateTenant(
            qpb.CreateTenantRequest(tenant_id=tid, plan=qpb.PLAN_PRO, overrides=overrides)
        )
        return tid

    def token(self, tenant_id: str, agent_id: str = "agent-1", role: str = "coder") -> str:
        return self.signer.mint(AgentIdentity(agent_id, tenant_id, role))[0]

    def guest(self, token: str, **kwargs: object) -> anthropic.Anthropic:
        """What runs in a guest: the official SDK, the proxy's URL, the agent token. No provider key."""
        options: dict[str, object] = {"max_retries": 0, **kwargs}
        return anthropic.Anthropic(base_url=self.url, api_key=token, **options)  # type: ignore[arg-type]

    def spent(self, tenant_id: str) -> int:
        """Quota's recorded COST_USD_MONTH usage (held estimates included)."""
        usages = self.quota.stub.GetUsage(qpb.GetUsageRequest(tenant_id=tenant_id)).usages
        return next(u.used for u in usages if u.resource == qpb.RESOURCE_COST_USD_MONTH)

    def live_holds(self, tenant_id: str) -> int:
        reply = self.quota.stub.ListReservations(
            qpb.ListReservationsRequest(tenant_id=tenant_id, resource=qpb.RESOURCE_COST_USD_MONTH)
        )
        return len(reply.reservations)

    def record(self, tenant_id: str, request_id: str) -> UsageRecord | None:
        return self.telemetry.app.ledger.store.find(tenant_id, request_id)

    def ledger_rows(self, tenant_id: str) -> list[sa.Row[tuple[object, ...]]]:
        query = sa.select(usage_records).where(usage_records.c.tenant_id == tenant_id)
        with self.telemetry.app.db.engine.connect() as conn:
            return list(conn.execute(query).all())


@contextmanager
def llm_bench(db: str, tmp_path: Path) -> Iterator[LlmBench]:
    keys = write_signing_key(tmp_path / "agent-signing")
    upstream = Upstream()
    quota = start_quota(db)
    telemetry = start_telemetry(
        db,
        quota_target=quota.target,
        agent_token_public_keys=str(keys / "public.pem"),
        llm_proxy_listen_address="127.0.0.1:0",
        llm_proxy_upstream_url=upstream.base_url,
        llm_proxy_upstream_api_key=PLATFORM_KEY,
        shutdown_grace_seconds=2,
    )
    try:
        yield LlmBench(quota, telemetry, upstream, TokenSigner.from_file(keys / "key.pem"), keys)
    finally:
        telemetry.stop()
        quota.stop()
        upstream.close()


def prompt(chars: int = 2000) -> list[dict[str, str]]:
    return [{"role": "user", "content": ("lorem ipsum " * (chars // 12 + 1))[:chars]}]
