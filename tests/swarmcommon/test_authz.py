"""Who is calling (Authenticator), what an agent may name (Caller), and the
tables' own checks. The same refusals on real servers with real TLS are in
tests/security."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarm.quota.v1 import quota_pb2
from swarmcommon.agenttoken import AgentClaims, AgentIdentity, TokenSigner, TokenVerifier
from swarmcommon.authz import (
    INSECURE_DEV_CALLER,
    PUBLIC,
    Authenticator,
    Caller,
    CallerKind,
    allow,
    check_access,
    current_caller,
)
from swarmcommon.errors import PermissionDenied, Unauthenticated

NOW = datetime(2030, 1, 1, tzinfo=UTC)
AGENT = AgentIdentity("agent-1", "acme", "coder")
AGENT_CALLER = Caller(
    CallerKind.AGENT, "agent-1", AgentClaims(AGENT, "jti", NOW, NOW + timedelta(minutes=15))
)
SERVICE = Caller(CallerKind.SERVICE, "gateway")
OPERATOR = Caller(CallerKind.OPERATOR, "alice")


class _Metadatum(NamedTuple):
    key: str
    value: str | bytes


class FakeContext:
    """What the Authenticator reads of a call: the TLS peer and the metadata."""

    def __init__(
        self, spiffe_id: str | None = None, metadata: Sequence[tuple[str, str | bytes]] = ()
    ) -> None:
        self._auth = {"peer_spiffe_id": [spiffe_id.encode()]} if spiffe_id is not None else {}
        self._metadata = tuple(_Metadatum(k, v) for k, v in metadata)

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self._metadata


def _identify(authenticator: Authenticator, context: FakeContext) -> Caller:
    return authenticator.identify(context)  # type: ignore[arg-type]


def _refused(authenticator: Authenticator, context: FakeContext, reason: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        _identify(authenticator, context)
    assert info.value.reason == reason, info.value.message
    return info.value


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def auth(key: Ed25519PrivateKey) -> Authenticator:
    class Clock:
        def now(self) -> datetime:
            return NOW

    return Authenticator("swarm.local", TokenVerifier([key.public_key()], clock=Clock()), insecure_dev=False)


def _token(key: Ed25519PrivateKey, agent: AgentIdentity = AGENT) -> str:
    class Clock:
        def now(self) -> datetime:
            return NOW

    return TokenSigner(key, clock=Clock()).mint(agent)[0]


# -- Caller: an agent acts in its token's tenant, as itself ------------------------------------------


def test_an_agent_acts_for_its_tokens_tenant_whatever_it_leaves_empty() -> None:
    assert AGENT_CALLER.tenant("") == "acme"
    assert AGENT_CALLER.tenant("acme") == "acme"


def test_an_agent_naming_another_tenant_is_refused() -> None:
    with pytest.raises(PermissionDenied) as info:
        AGENT_CALLER.tenant("victim", field="project.tenant_id")
    assert info.value.reason == "TENANT_MISMATCH"
    assert info.value.metadata["field"] == "project.tenant_id"
    assert "victim" in info.value.message


def test_an_agent_acts_only_as_itself() -> None:
    assert AGENT_CALLER.require_agent("") == "agent-1"
    assert AGENT_CALLER.require_agent("agent-1") == "agent-1"
    with pytest.raises(PermissionDenied) as info:
        AGENT_CALLER.require_agent("agent-2")
    assert (info.value.reason, info.value.metadata["field"]) == ("AGENT_MISMATCH", "agent_id")


@pytest.mark.parametrize("caller", [SERVICE, OPERATOR, INSECURE_DEV_CALLER], ids=str)
def test_workloads_act_for_whom_they_name(caller: Caller) -> None:
    assert caller.tenant("victim") == "victim"
    assert caller.tenant("") == ""
    assert caller.require_agent("agent-2") == "agent-2"
    assert not caller.is_agent


# -- Rule -------------------------------------------------------------------------------------------


def test_a_rule_admits_exactly_whom_it_names() -> None:
    rule = allow("vmhost", operators=True)
    assert rule.admits(Caller(CallerKind.SERVICE, "vmhost"))
    assert not rule.admits(SERVICE)
    assert rule.admits(OPERATOR)
    assert not rule.admits(AGENT_CALLER)
    assert allow(agents=True).admits(AGENT_CALLER)
    assert not allow(agents=True).admits(OPERATOR)
    assert not allow().admits(SERVICE) and allow().describe() == "nobody"
    assert PUBLIC.admits(AGENT_CALLER) and PUBLIC.admits(SERVICE)
    assert rule.describe() == "service/vmhost, operators"


# -- Authenticator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spiffe_id", "expected"),
    [
        ("spiffe://swarm.local/service/quota", Caller(CallerKind.SERVICE, "quota")),
        ("spiffe://swarm.local/operator/alice", Caller(CallerKind.OPERATOR, "alice")),
    ],
)
def test_a_workload_is_known_by_its_spiffe_id(auth: Authenticator, spiffe_id: str, expected: Caller) -> None:
    assert _identify(auth, FakeContext(spiffe_id)) == expected


@pytest.mark.parametrize(
    "spiffe_id",
    [
        "spiffe://evil.local/service/gateway",
        "spiffe://swarm.local.evil/service/gateway",
        "spiffe://swarm.localhost/service/gateway",
        "spiffe://SWARM.LOCAL.evil/service/gateway",
        "https://swarm.local/service/gateway",
    ],
)
def test_an_identity_of_another_trust_domain_is_refused(auth: Authenticator, spiffe_id: str) -> None:
    err = _refused(auth, FakeContext(spiffe_id), "FOREIGN_IDENTITY")
    assert spiffe_id in err.message


@pytest.mark.parametrize(
    "spiffe_id",
    [
        "spiffe://swarm.local/",
        "spiffe://swarm.local/service",
        "spiffe://swarm.local/service/",
        "spiffe://swarm.local/service/gateway/extra",
        "spiffe://swarm.local/operator/",
        "spiffe://swarm.local/operator/alice/admin",
        "spiffe://swarm.local/agent/agent-1",
        "spiffe://swarm.local/insecure-dev/x",
        "spiffe://swarm.local//service/gateway",
        "spiffe://swarm.local/Service/gateway",
    ],
)
def test_an_identity_that_is_not_a_service_or_an_operator_is_refused(
    auth: Authenticator, spiffe_id: str
) -> None:
    _refused(auth, FakeContext(spiffe_id), "UNKNOWN_IDENTITY")


def test_a_certificate_identity_wins_over_a_token(auth: Authenticator, key: Ed25519PrivateKey) -> None:
    context = FakeContext(
        "spiffe://swarm.local/service/ticketing", [("authorization", f"Bearer {_token(key)}")]
    )
    assert _identify(auth, context) == Caller(CallerKind.SERVICE, "ticketing")


def test_an_agent_is_known_by_its_token(auth: Authenticator, key: Ed25519PrivateKey) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        caller = _identify(auth, FakeContext(metadata=[("authorization", f"{scheme} {_token(key)}")]))
        assert (caller.kind, caller.name, caller.agent and caller.agent.tenant_id) == (
            CallerKind.AGENT,
            "agent-1",
            "acme",
        )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "TOKEN_MALFORMED"),
        ("token-without-scheme", "TOKEN_MALFORMED"),
        ("Bearer ", "TOKEN_MALFORMED"),
        ("Bearer not.a.token", "TOKEN_MALFORMED"),
    ],
)
def test_bad_authorization_metadata_is_refused(auth: Authenticator, value: str, reason: str) -> None:
    _refused(auth, FakeContext(metadata=[("authorization", value)]), reason)


def test_a_token_of_another_key_is_refused(auth: Authenticator) -> None:
    token = _token(Ed25519PrivateKey.generate())
    _refused(auth, FakeContext(metadata=[("authorization", f"Bearer {token}")]), "TOKEN_UNKNOWN_KEY")


def test_a_service_without_a_verifier_refuses_tokens(key: Ed25519PrivateKey) -> None:
    quota = Authenticator("swarm.local", None, insecure_dev=False)
    _refused(quota, FakeContext(metadata=[("authorization", f"Bearer {_token(key)}")]), "TOKENS_NOT_ACCEPTED")


def test_nobody_is_unauthenticated_unless_in_insecure_dev_mode(auth: Authenticator) -> None:
    err = _refused(auth, FakeContext(metadata=[("x-tenant", "acme")]), "NO_CREDENTIALS")
    assert "certificate" in err.message
    dev = Authenticator("swarm.local", None, insecure_dev=True)
    assert _identify(dev, FakeContext()) is INSECURE_DEV_CALLER
    # Insecure dev mode trusts the unidentified, not the misidentified.
    _refused(dev, FakeContext("spiffe://evil.local/service/gateway"), "FOREIGN_IDENTITY")


# -- tables -----------------------------------------------------------------------------------------


def test_a_table_must_cover_every_method_and_no_other() -> None:
    full_name = quota_pb2.DESCRIPTOR.services_by_name["QuotaService"].full_name
    methods = [m.name for m in quota_pb2.DESCRIPTOR.services_by_name["QuotaService"].methods]
    check_access(full_name, {m: PUBLIC for m in methods})
    with pytest.raises(ValueError, match=r"no entry for \['Reserve'\]"):
        check_access(full_name, {m: PUBLIC for m in methods if m != "Reserve"})
    with pytest.raises(ValueError, match=r"unknown methods \['Reserv'\]"):
        check_access(full_name, {**{m: PUBLIC for m in methods}, "Reserv": PUBLIC})


def test_the_caller_is_only_known_inside_an_authorized_call() -> None:
    with pytest.raises(RuntimeError, match="outside an authorized RPC"):
        current_caller()
