"""Every RPC of every service, called by every identity, on real servers with
real TLS: the outcome is what the service's ACCESS table says.

The RPCs come from the proto descriptors, so a new RPC without an entry in
its table fails here. Expectations come from each Rule (rule.admits), so
this walks the real tables; a few facts of the spec are also pinned by
hand below, so a table edited the wrong way fails too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest

from swarmcommon.agenttoken import AgentClaims
from swarmcommon.authz import Caller, CallerKind, Rule
from swarmcommon.pki import SERVICES
from tests.support.pki import AGENT, MeshPki, Outcome, bearer, call, method_names, own_channel, tls_channel
from tests.support.secure import AGENT_PORT_SERVICES, TABLES, SecureService

OPERATOR = "operator-admin"
AGENT_ID = "agent"  # a token vmhost signed, on the agent port (else the mesh port, without a certificate)
ANONYMOUS = "anonymous"  # TLS without a certificate on the mesh port
ANONYMOUS_GUEST = "anonymous-guest"  # TLS without a token on the agent port
IDENTITIES = [*SERVICES, OPERATOR, AGENT_ID, ANONYMOUS, ANONYMOUS_GUEST]

ADMITTED, DENIED, UNAUTHENTICATED, NO_CONNECTION = "admitted", "denied", "unauthenticated", "no connection"
# The reasons swarmcommon.authz refuses a call with. A servicer may refuse
# too once a call is let in (quota's Authenticate: "invalid API key"), with its own.
AUTHZ_REASONS = {
    "NO_CREDENTIALS",
    "TOKENS_NOT_ACCEPTED",
    "FOREIGN_IDENTITY",
    "UNKNOWN_IDENTITY",
    "METHOD_NOT_ALLOWED",
    "NOT_IN_ACCESS_TABLE",
}
# Never the answer to a call that was let in: no connection, no such method,
# or a crash (an empty request is a bad input like any other: a clear error).
NOT_SERVED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def let_in(outcome: Outcome) -> bool:
    """Through authentication and the table: the servicer judged the (empty) request."""
    if outcome.code in NOT_SERVED:
        return False
    refused = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    return not (
        outcome.code in refused and (outcome.reason in AUTHZ_REASONS or outcome.reason.startswith("TOKEN_"))
    )


CASES = [
    pytest.param(server, full_name, method, identity, id=f"{server}.{method}-{identity}")
    for server, tables in TABLES.items()
    for full_name in tables
    for method in method_names(full_name)
    for identity in IDENTITIES
    if identity != ANONYMOUS_GUEST or server in AGENT_PORT_SERVICES
]


def caller(identity: str) -> Caller:
    if identity in SERVICES:
        return Caller(CallerKind.SERVICE, identity)
    if identity == OPERATOR:
        return Caller(CallerKind.OPERATOR, "admin")
    now = datetime.now(UTC)
    return Caller(CallerKind.AGENT, AGENT.agent_id, AgentClaims(AGENT, "jti", now, now))


def expected(server: str, rule: Rule, identity: str) -> str:
    if identity == ANONYMOUS:
        return NO_CONNECTION
    if identity == ANONYMOUS_GUEST:
        return UNAUTHENTICATED
    if identity == AGENT_ID and server not in AGENT_PORT_SERVICES:
        return NO_CONNECTION  # no agent port: a token alone opens no connection
    return ADMITTED if rule.admits(caller(identity)) else DENIED


class Callers:
    """One channel per server and identity, for the whole module."""

    def __init__(self, pki: MeshPki, servers: dict[str, SecureService]) -> None:
        self.pki = pki
        self.servers = servers
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    def _channel(self, server: str, identity: str) -> grpc.Channel:
        key = (server, identity)
        if key not in self._channels:
            svc = self.servers[server]
            if identity in (AGENT_ID, ANONYMOUS_GUEST) and svc.agent_port is not None:
                channel = tls_channel(svc.agent_target, self.pki.ca_pem)
            elif identity in (AGENT_ID, ANONYMOUS):
                channel = tls_channel(svc.target, self.pki.ca_pem)
            else:
                channel = own_channel(svc.target, self.pki.identity(identity))
            self._channels[key] = channel
        return self._channels[key]

    def call(self, server: str, full_name: str, method: str, identity: str) -> Outcome:
        metadata = bearer(self.pki.token()) if identity == AGENT_ID else []
        return call(self._channel(server, identity), full_name, method, metadata=metadata, timeout=5)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


@pytest.fixture(scope="module")
def callers(pki: MeshPki, servers: dict[str, SecureService]) -> Iterator[Callers]:
    c = Callers(pki, servers)
    try:
        yield c
    finally:
        c.close()


def check(outcome: Outcome, expectation: str) -> None:
    if expectation == ADMITTED:
        assert let_in(outcome), outcome
    elif expectation == DENIED:
        assert (outcome.code, outcome.reason) == (grpc.StatusCode.PERMISSION_DENIED, "METHOD_NOT_ALLOWED"), (
            outcome
        )
    elif expectation == UNAUTHENTICATED:
        assert (outcome.code, outcome.reason) == (grpc.StatusCode.UNAUTHENTICATED, "NO_CREDENTIALS"), outcome
    else:
        assert outcome.code == grpc.StatusCode.UNAVAILABLE, outcome


@pytest.mark.parametrize(("server", "full_name", "method", "identity"), CASES)
def test_each_rpc_admits_exactly_whom_its_table_names(
    callers: Callers, server: str, full_name: str, method: str, identity: str
) -> None:
    rule = TABLES[server][full_name].get(method)
    assert rule is not None, f"{full_name}/{method} has no entry in its ACCESS table"
    outcome = callers.call(server, full_name, method, identity)
    check(outcome, expected(server, rule, identity))


@pytest.mark.parametrize(
    ("server", "full_name"), [(s, name) for s, tables in TABLES.items() for name in tables]
)
def test_every_rpc_has_an_entry_and_every_entry_an_rpc(server: str, full_name: str) -> None:
    assert set(TABLES[server][full_name]) == set(method_names(full_name))


def test_every_served_service_has_its_table(servers: dict[str, SecureService]) -> None:
    """The servers run with the tables walked above (one per gRPC service they register)."""
    for name in TABLES:
        assert servers[name].access == TABLES[name]


# The spec, by hand: who may call these, and nobody else.
FACTS = [
    ("quota", "swarm.quota.v1.QuotaService", "CreateApiKey", {"gateway", OPERATOR}),
    # vmhost holds VMs, telemetry's LLM proxy holds cost while a call runs
    # (and quota keeps each to its own resource).
    ("quota", "swarm.quota.v1.QuotaService", "Reserve", {"vmhost", "telemetry"}),
    ("quota", "swarm.quota.v1.QuotaService", "Release", {"vmhost", "telemetry"}),
    ("events", "swarm.events.v1.EventsService", "Publish", {"ticketing", "vmhost"}),
    ("vmhost", "swarm.vmhost.v1.VmHostService", "Heartbeat", {AGENT_ID}),
    ("ticketing", "swarm.ticketing.v1.TicketingService", "ClaimTicket", {AGENT_ID}),
    ("telemetry", "swarm.telemetry.v1.TelemetryService", "RecordUsage", {AGENT_ID}),
]


@pytest.mark.parametrize(
    ("server", "full_name", "method", "allowed"), [pytest.param(*f, id=f"{f[0]}.{f[2]}") for f in FACTS]
)
def test_the_spec_pins_who_may_call(
    callers: Callers, server: str, full_name: str, method: str, allowed: set[str]
) -> None:
    outcomes = {
        identity: callers.call(server, full_name, method, identity)
        for identity in IDENTITIES
        if identity != ANONYMOUS_GUEST or server in AGENT_PORT_SERVICES
    }
    admitted = {identity for identity, outcome in outcomes.items() if let_in(outcome)}
    assert admitted == allowed, (
        f"{full_name}/{method} lets in {sorted(admitted)}; the spec says {sorted(allowed)}. "
        f"Outcomes: { {i: str(o) for i, o in outcomes.items()} }"
    )
