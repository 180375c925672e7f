"""Guests call the LLM only through telemetry's LLM proxy: a netns guest on a
real bridge runs the agent runtime's tracked client (the official
`anthropic` SDK) with its agent token as the API key, over HTTPS trusting
only the mesh CA, against the local Messages server (swarmdemo's) standing
in for the provider. Real quota and telemetry with mutual TLS; the proxy records the
usage once, whatever happens to the guest. No guest ever holds a provider key,
whether vmhost has one in its environment or is told to pass one on."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from swarm.quota.v1 import quota_pb2 as qpb
from swarm.quota.v1 import quota_pb2_grpc as qpb_grpc
from swarm.vmhost.v1 import vmhost_pb2 as pb
from swarm_telemetry import server as telemetry_server
from swarm_telemetry.config import Settings as TelemetrySettings
from swarm_telemetry.tables import usage_records
from swarm_vmhost.domain import Agent, DriverName
from swarm_vmhost.drivers.netns import NetnsDriver
from swarmcommon.agenttoken import SIGNING_KEY_FILE
from swarmcommon.pki import CA_CERT
from swarmdemo.messages_server import MessagesServer, Reply
from tests.support.harness import BACKENDS
from tests.support.pki import MeshPki, make_mesh_pki, tls_channel
from tests.support.secure import SecureService, start_secure
from tests.support.waiting import eventually
from tests.vmhost.harness import REPO, VmHostHarness

PLATFORM_KEY = "sk-ant-platform-key-never-for-guests"
MODEL = "claude-sonnet-4-5"  # as tests/vmhost/llm_guest.py asks for
INPUT, OUTPUT = 3, 15  # its published prices, micro-dollars per token
LLM_GUEST = f"{sys.executable} {REPO / 'tests' / 'vmhost' / 'llm_guest.py'}"
# What an operator might wrongly hand guests: caught by name and by value.
OTHER_KEY = "sk-other-provider-key-0123456789"
LEAKY_GUEST_ENV = (
    f"ANTHROPIC_API_KEY={PLATFORM_KEY};OPENAI_API_KEY={OTHER_KEY};SWARM_NOTE=key {PLATFORM_KEY};"
    "SWARM_LLM_BASE_URL=http://{host}:1;SWARM_EXTRA=kept"
)


@dataclass
class ProxyBench:
    pki: MeshPki
    upstream: MessagesServer
    quota: SecureService
    quota_admin: qpb_grpc.QuotaServiceStub
    telemetry: telemetry_server.Telemetry

    @property
    def proxy_port(self) -> int:
        assert self.telemetry.llm_proxy is not None
        return self.telemetry.llm_proxy.port

    def tenant(self, name: str, budget_usd_micros: int = 5_000_000) -> str:
        override = qpb.QuotaOverride(resource=qpb.RESOURCE_COST_USD_MONTH, limit=budget_usd_micros)
        self.quota_admin.CreateTenant(
            qpb.CreateTenantRequest(tenant_id=name, plan=qpb.PLAN_PRO, overrides=[override])
        )
        return name

    def spent(self, tenant_id: str) -> int:
        usages = self.quota_admin.GetUsage(qpb.GetUsageRequest(tenant_id=tenant_id)).usages
        return next(u.used for u in usages if u.resource == qpb.RESOURCE_COST_USD_MONTH)

    def live_holds(self, tenant_id: str) -> int:
        request = qpb.ListReservationsRequest(tenant_id=tenant_id, resource=qpb.RESOURCE_COST_USD_MONTH)
        return len(self.quota_admin.ListReservations(request).reservations)

    def ledger_rows(self, tenant_id: str) -> list[sa.Row[tuple[object, ...]]]:
        query = sa.select(usage_records).where(usage_records.c.tenant_id == tenant_id)
        with self.telemetry.db.engine.connect() as conn:
            return list(conn.execute(query).all())

    def vmhost(self, make_vmhost: Callable[..., VmHostHarness], **overrides: object) -> VmHostHarness:
        """vmhost minting agent tokens, telling guests the proxy as the host reaches it."""
        return make_vmhost(
            default_driver="netns",
            guest_command=LLM_GUEST,
            agent_token_signing_key=str(self.pki.signing_dir / SIGNING_KEY_FILE),
            guest_ca_file=str(self.pki.identity("vmhost") / CA_CERT),
            llm_proxy_url=f"https://127.0.0.1:{self.proxy_port}",
            **overrides,
        )


@pytest.fixture
def bench(db: str, tmp_path: Path) -> Iterator[ProxyBench]:
    pki = make_mesh_pki(tmp_path / "pki")
    upstream = MessagesServer(lambda body: Reply("Done.")).start()
    quota = start_secure("quota", pki, tmp_path / "quota")
    admin = tls_channel(quota.target, pki.ca_pem, pki.identity("operator-admin"))
    telemetry = telemetry_server.start(
        TelemetrySettings(
            database_url=db,
            listen_address="127.0.0.1:0",
            agent_listen_address="127.0.0.1:0",
            insecure_dev=False,
            tls_dir=str(pki.identity("telemetry")),
            trust_domain=pki.trust_domain,
            agent_token_public_keys=str(pki.public_key),
            retention_interval_seconds=0,
            quota_target=quota.target,
            # Every address: guests reach it on the bridge address.
            llm_proxy_listen_address="0.0.0.0:0",
            llm_proxy_upstream_url=upstream.base_url,
            llm_proxy_upstream_api_key=PLATFORM_KEY,
            shutdown_grace_seconds=2,
        )
    )
    try:
        yield ProxyBench(pki, upstream, quota, qpb_grpc.QuotaServiceStub(admin), telemetry)
    finally:
        telemetry.stop(1)
        admin.close()
        quota.stop()
        upstream.close()


def _spawn(host: VmHostHarness, tenant: str) -> pb.Agent:
    request = pb.SpawnAgentRequest(tenant_id=tenant, template="default", role=pb.AGENT_ROLE_CODER)
    return host.stub.SpawnAgent(request).agent


def _agent(host: VmHostHarness, agent_id: str) -> Agent:
    return host.app.host.agents.get_any(agent_id)


def _environ_of(pid: int) -> dict[str, str]:
    """The guest's environment as the host sees it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in children.read_text().split()]
    return found


def _assert_no_provider_key(env: dict[str, str]) -> None:
    names = [k for k in env if k.upper().endswith("_API_KEY") or k.upper().startswith("ANTHROPIC_")]
    assert names == [], f"provider key variables reached the guest: {names}"
    leaked = [k for k, v in env.items() if PLATFORM_KEY in v or OTHER_KEY in v]
    assert leaked == [], f"a provider key's value reached the guest in {leaked}"


def _killed_by(pid: int) -> int | None:
    """The signal that ended the guest under our child `pid` (vmhost runs in
    this process), without reaping it. A sandbox (bubblewrap) reports its
    guest's death by a signal as exit status 128 + the signal, as shells do."""
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
    if result is None:
        return None
    if result.si_code == os.CLD_KILLED:
        return result.si_status
    return result.si_status - 128 if result.si_status > 128 else -1


@BACKENDS
def test_a_netns_guest_calls_through_the_proxy_with_its_token_and_no_provider_key(
    bench: ProxyBench, make_vmhost: Callable[..., VmHostHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    # vmhost itself holds provider keys, and is told to pass them on: neither reaches the guest.
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLATFORM_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_KEY)
    host = bench.vmhost(make_vmhost, guest_env=LEAKY_GUEST_ENV)
    tenant = bench.tenant("acme-llm")
    agent = _spawn(host, tenant)
    driver = host.app.host.drivers[DriverName.NETNS]
    assert isinstance(driver, NetnsDriver)
    answer_file = driver.homes / agent.id / "answer.json"  # the guest's work directory
    try:
        eventually(answer_file.exists, timeout=60, what="the guest's answer through the proxy")
        answer = json.loads(answer_file.read_text())
        proxy_url = f"https://{host.bridge.address}:{bench.proxy_port}"
        assert answer["text"] == "Done." and answer["through_proxy"] is True
        assert answer["base_url"].rstrip("/") == proxy_url

        pid = _agent(host, agent.id).handle.pid  # type: ignore[union-attr]
        assert pid is not None
        env = _environ_of(pid)
        _assert_no_provider_key(env)
        assert env["SWARM_LLM_BASE_URL"] == proxy_url  # the proxy, not what GUEST_ENV said
        assert env["SWARM_EXTRA"] == "kept" and env["SWARM_AGENT_TOKEN"]

        assert len(bench.upstream.requests) == 1  # the provider saw the one call

        # Recorded once, server-side, under the token's tenant and agent, and charged.
        eventually(lambda: bench.live_holds(tenant) == 0, what="the call settled")
        (row,) = bench.ledger_rows(tenant)
        assert (row.agent_id, row.request_type, row.model) == (agent.id, "coder", MODEL)
        assert (row.input_tokens, row.output_tokens) == (answer["input_tokens"], answer["output_tokens"])
        cost = answer["input_tokens"] * INPUT + answer["output_tokens"] * OUTPUT
        assert row.cost_usd_micros == cost
        assert bench.spent(tenant) == cost
    finally:
        host.stub.TerminateAgent(pb.TerminateAgentRequest(tenant_id=tenant, agent_id=agent.id))


@BACKENDS
def test_a_guest_killed_right_after_its_reply_has_the_usage_recorded_once(
    bench: ProxyBench, make_vmhost: Callable[..., VmHostHarness]
) -> None:
    host = bench.vmhost(make_vmhost, guest_env="SWARM_TEST_KILL_AFTER_REPLY=1")
    tenant = bench.tenant("acme-killed")
    agent = _spawn(host, tenant)
    pid = _agent(host, agent.id).handle.pid  # type: ignore[union-attr]
    assert pid is not None
    eventually(lambda: _killed_by(pid) is not None, timeout=60, what="the guest's SIGKILL")
    assert _killed_by(pid) == signal.SIGKILL
    assert len(bench.upstream.requests) == 1  # the provider answered it before the guest died

    eventually(lambda: bench.live_holds(tenant) == 0 and len(bench.ledger_rows(tenant)) == 1)
    (row,) = bench.ledger_rows(tenant)
    assert row.agent_id == agent.id and row.output_tokens == 2  # "Done." in the server's counting
    cost = row.input_tokens * INPUT + row.output_tokens * OUTPUT
    assert row.cost_usd_micros == cost == bench.spent(tenant)
    # Nothing the dead guest left behind records it again.
    assert len(bench.ledger_rows(tenant)) == 1 and len(bench.upstream.requests) == 1


def test_warm_sandboxes_hold_none_of_vmhosts_keys(
    make_vmhost: Callable[..., VmHostHarness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standard guest is taken from a warm sandbox started before it had
    an agent; every process of it keeps that start's environment (in
    /proc/<pid>/environ), which must hold none of vmhost's keys."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLATFORM_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_KEY)
    host = make_vmhost(default_driver="netns", llm_proxy_url="http://{host}:8443/", guest_env=LEAKY_GUEST_ENV)
    driver = host.app.host.drivers[DriverName.NETNS]
    assert isinstance(driver, NetnsDriver) and driver.wait_warm(timeout=60)
    agent = _spawn(host, "acme")
    handle = _agent(host, agent.id).handle
    assert handle is not None and handle.pid is not None and handle.data.get("warm") == "1"
    processes = _process_tree(handle.pid)
    assert len(processes) >= 2  # bubblewrap and the guest's Python at least
    for pid in processes:
        env = _environ_of(pid)
        _assert_no_provider_key(env)
        assert "SWARM_AGENT_TOKEN" not in env  # this vmhost is in insecure dev mode
