"""Agent tokens: what verifies, and every way a forged, stale or foreign one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from swarmcommon.agenttoken import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    LEEWAY,
    MAX_TOKEN_CHARS,
    PUBLIC_KEY_FILE,
    SIGNING_KEY_FILE,
    AgentClaims,
    AgentIdentity,
    TokenSigner,
    TokenVerifier,
    key_id,
    write_signing_key,
)
from swarmcommon.clock import ManualClock
from swarmcommon.errors import Unauthenticated
from swarmcommon.pki import Authority

AGENT = AgentIdentity("agent-1", "acme", "coder")
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def _verifier(key: Ed25519PrivateKey, clock: ManualClock, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier([key.public_key()], clock=clock, **kwargs)


def _refused(verifier: TokenVerifier, token: str, reason: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    assert info.value.reason == reason, info.value.message
    return info.value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = "=" * (-len(payload) % 4)
    return (
        json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
        json.loads(base64.urlsafe_b64decode(payload + pad)),
        signature,
    )


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(START.timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": AGENT.agent_id,
        "tenant": AGENT.tenant_id,
        "role": AGENT.role,
        "iat": now,
        "exp": now + 900,
        "jti": "token-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_minted_token_verifies_to_its_agent(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    token, expires = TokenSigner(key, clock=clock, ttl=timedelta(minutes=10)).mint(AGENT)
    claims = _verifier(key, clock).verify(token)
    assert claims.agent == AGENT
    assert (claims.agent_id, claims.tenant_id, claims.role) == ("agent-1", "acme", "coder")
    assert claims.issued_at == START and claims.expires_at == expires == START + timedelta(minutes=10)
    header, payload, _ = _segments(token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": key_id(key.public_key())}
    assert (payload["iss"], payload["aud"]) == (ISSUER, AUDIENCE)


def test_every_token_has_its_own_id(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    signer, verifier = TokenSigner(key, clock=clock), _verifier(key, clock)
    assert verifier.verify(signer.mint(AGENT)[0]).token_id != verifier.verify(signer.mint(AGENT)[0]).token_id


def test_a_token_expires_after_its_ttl_and_the_leeway(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    token, expires = TokenSigner(key, clock=clock, ttl=timedelta(minutes=15)).mint(AGENT)
    verifier = _verifier(key, clock)
    clock.advance(expires - START + LEEWAY - timedelta(seconds=1))
    assert verifier.verify(token).agent == AGENT  # a signer's clock a little ahead is tolerated
    clock.advance(timedelta(seconds=1))
    err = _refused(verifier, token, "TOKEN_EXPIRED")
    assert expires.isoformat() in err.message


def test_a_token_of_another_key_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    token, _ = TokenSigner(Ed25519PrivateKey.generate(), clock=clock).mint(AGENT)
    _refused(_verifier(key, clock), token, "TOKEN_UNKNOWN_KEY")


def test_another_key_claiming_our_key_id_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    forged = jwt.encode(
        _claims(),
        Ed25519PrivateKey.generate(),
        algorithm=ALGORITHM,
        headers={"kid": key_id(key.public_key())},
    )
    _refused(_verifier(key, clock), forged, "TOKEN_INVALID")


def test_any_key_of_a_rotation_verifies(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    """While vmhost's key is rotated, services trust the old and the new one."""
    new = Ed25519PrivateKey.generate()
    verifier = TokenVerifier([key.public_key(), new.public_key()], clock=clock)
    for signing in (key, new):
        assert verifier.verify(TokenSigner(signing, clock=clock).mint(AGENT)[0]).agent == AGENT


def test_a_tampered_payload_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    """Another tenant written into a genuine token: its signature no longer matches."""
    token, _ = TokenSigner(key, clock=clock).mint(AGENT)
    header, payload, signature = token.split(".")
    claims = _segments(token)[1] | {"tenant": "victim"}
    tampered = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    _refused(_verifier(key, clock), tampered, "TOKEN_INVALID")


def test_an_unsigned_token_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    kid = key_id(key.public_key())
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    unsigned = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    _refused(_verifier(key, clock), unsigned, "TOKEN_INVALID")


def test_an_hmac_token_keyed_with_the_public_key_is_refused(
    key: Ed25519PrivateKey, clock: ManualClock
) -> None:
    """The classic algorithm confusion: HS256 with the (public) verification key as secret."""
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = key_id(key.public_key())
    signing_input = ".".join(
        [
            _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()),
            _b64(json.dumps(_claims()).encode()),
        ]
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    _refused(_verifier(key, clock), f"{signing_input}.{_b64(mac)}", "TOKEN_INVALID")


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"iss": "someone-else"}, "issuer"),
        ({"aud": "another-mesh"}, "audience"),
        ({"tenant": None}, "no tenant"),
        ({"tenant": ""}, "empty tenant"),
        ({"role": 7}, "role not a string"),
        ({"sub": None}, "no subject"),
        ({"jti": None}, "no token id"),
        ({"exp": None}, "no expiry"),
        ({"iat": "yesterday"}, "issued-at not a number"),
    ],
)
def test_a_signed_token_with_wrong_or_missing_claims_is_refused(
    key: Ed25519PrivateKey, clock: ManualClock, changes: dict[str, Any], what: str
) -> None:
    token = jwt.encode(
        _claims(**changes), key, algorithm=ALGORITHM, headers={"kid": key_id(key.public_key())}
    )
    _refused(_verifier(key, clock), token, "TOKEN_INVALID")


def test_a_revoked_agents_token_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    asked: list[AgentClaims] = []

    def revoked(claims: AgentClaims) -> bool:
        asked.append(claims)
        return claims.agent_id == "agent-1"

    verifier = _verifier(key, clock, revoked=revoked)
    signer = TokenSigner(key, clock=clock)
    err = _refused(verifier, signer.mint(AGENT)[0], "TOKEN_REVOKED")
    assert "agent-1" in err.message
    other = AgentIdentity("agent-2", "acme", "coder")
    assert verifier.verify(signer.mint(other)[0]).agent == other
    assert [c.agent_id for c in asked] == ["agent-1", "agent-2"]


def test_an_expired_token_is_refused_before_revocation_is_asked(
    key: Ed25519PrivateKey, clock: ManualClock
) -> None:
    asked: list[AgentClaims] = []
    token, _ = TokenSigner(key, clock=clock).mint(AGENT)
    clock.advance(timedelta(days=1))

    def revoked(claims: AgentClaims) -> bool:
        asked.append(claims)
        return False

    _refused(_verifier(key, clock, revoked=revoked), token, "TOKEN_EXPIRED")
    assert asked == []


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("x" * (MAX_TOKEN_CHARS + 1), id="over-long"),
        pytest.param("", id="empty"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("a.b.c", id="undecodable"),
        pytest.param(_b64(b"[1,2]") + ".e30.", id="header-not-an-object"),
    ],
)
def test_malformed_tokens_are_refused_before_any_key_is_used(
    key: Ed25519PrivateKey, clock: ManualClock, token: str
) -> None:
    _refused(_verifier(key, clock), token, "TOKEN_MALFORMED")


def test_an_over_long_token_is_refused_even_if_genuine(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    padded = TokenSigner(key, clock=clock).mint(AgentIdentity("a" * MAX_TOKEN_CHARS, "acme", "coder"))[0]
    _refused(_verifier(key, clock), padded, "TOKEN_MALFORMED")


@pytest.mark.parametrize("kid", [None, "0123456789abcdef"])
def test_a_token_without_a_known_key_id_is_refused(
    key: Ed25519PrivateKey, clock: ManualClock, kid: object
) -> None:
    headers = {} if kid is None else {"kid": kid}
    token = jwt.encode(_claims(), key, algorithm=ALGORITHM, headers=headers)
    _refused(_verifier(key, clock), token, "TOKEN_UNKNOWN_KEY")


def test_a_key_id_that_is_not_a_string_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    signing_input = ".".join(
        [
            _b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": 42}).encode()),
            _b64(json.dumps(_claims()).encode()),
        ]
    )
    token = f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"
    with pytest.raises(Unauthenticated) as info:
        _verifier(key, clock).verify(token)
    assert info.value.reason in ("TOKEN_MALFORMED", "TOKEN_UNKNOWN_KEY"), info.value.message


def test_a_signer_whose_clock_is_a_little_ahead_is_tolerated(
    key: Ed25519PrivateKey, clock: ManualClock
) -> None:
    """vmhost's clock a few seconds ahead of a service's: its fresh tokens work at once."""
    ahead = ManualClock(START + LEEWAY - timedelta(seconds=1))
    token, _ = TokenSigner(key, clock=ahead).mint(AGENT)
    assert _verifier(key, clock).verify(token).agent == AGENT


def test_on_the_system_clock_a_signer_a_little_ahead_is_tolerated(key: Ed25519PrivateKey) -> None:
    """The same on real clocks (PyJWT alone refused such a token as "not yet valid (iat)")."""
    ahead = ManualClock(datetime.now(UTC) + timedelta(seconds=5))
    token, _ = TokenSigner(key, clock=ahead).mint(AGENT)
    assert TokenVerifier([key.public_key()]).verify(token).agent == AGENT


def test_a_token_issued_in_the_future_is_refused(key: Ed25519PrivateKey, clock: ManualClock) -> None:
    """A token minted for later (a signer's clock far off) does not work before its time."""
    token, _ = TokenSigner(key, clock=ManualClock(START + timedelta(hours=1))).mint(AGENT)
    err = _refused(_verifier(key, clock), token, "TOKEN_INVALID")
    assert "future" in err.message


def test_key_files_round_trip_and_the_private_key_is_owner_only(tmp_path: Path, clock: ManualClock) -> None:
    directory = write_signing_key(tmp_path / "signing")
    assert stat.S_IMODE((directory / SIGNING_KEY_FILE).stat().st_mode) == 0o600
    signer = TokenSigner.from_file(directory / SIGNING_KEY_FILE, clock=clock)
    verifier = TokenVerifier.from_files([directory / PUBLIC_KEY_FILE], clock=clock)
    assert verifier.verify(signer.mint(AGENT)[0]).agent == AGENT


def test_a_new_signing_key_written_over_a_readable_one_is_owner_only(tmp_path: Path) -> None:
    (tmp_path / SIGNING_KEY_FILE).write_bytes(b"old")
    (tmp_path / SIGNING_KEY_FILE).chmod(0o644)
    write_signing_key(tmp_path)
    assert stat.S_IMODE((tmp_path / SIGNING_KEY_FILE).stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in (tmp_path / SIGNING_KEY_FILE).read_bytes()


def test_keys_of_another_kind_are_refused(tmp_path: Path) -> None:
    """A mesh certificate's EC key is not a token key, either way round."""
    ca = Authority.create()
    ca.write(tmp_path)
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        TokenSigner.from_file(tmp_path / "ca-key.pem")
    public = tmp_path / "ec-public.pem"
    public.write_bytes(
        ca.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        TokenVerifier.from_files([public])
    with pytest.raises(ValueError, match="at least one public key"):
        TokenVerifier([])


def test_a_token_checked_before_is_still_revoked_and_expired_on_later_calls(
    key: Ed25519PrivateKey, clock: ManualClock
) -> None:
    """Verified tokens are remembered (the signature is not checked again),
    but revocation and expiry are decided on every call."""
    terminated: set[str] = set()
    verifier = _verifier(key, clock, revoked=lambda claims: claims.agent_id in terminated)
    token, _ = TokenSigner(key, clock=clock).mint(AGENT)
    assert verifier.verify(token).agent == AGENT
    assert verifier.verify(token).agent == AGENT  # the remembered check
    terminated.add(AGENT.agent_id)
    _refused(verifier, token, "TOKEN_REVOKED")
    # A token that differs in one character is its own text: checked, and refused.
    head, payload, signature = token.split(".")
    forged = ".".join([head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    _refused(verifier, forged, "TOKEN_INVALID")
